"""Facts about the ELBO estimators and the importance-weighted bound."""

import functools

import jax
import numpy as np
import pytest

import vae_jax
from vae_jax import distributions as D
from tests import helpers


@pytest.fixture(scope="module")
def linear():
  return helpers.linear_gaussian_problem()


@pytest.fixture(scope="module")
def mlp():
  return helpers.small_vae(20, 4, 16, n=8)


def many(fn, n, key=jax.random.key(123)):
  """fn(key) for n independent keys, stacked: [n, ...]."""
  return jax.jit(jax.vmap(fn))(jax.random.split(key, n))


def test_exact_posterior_gives_log_px_with_zero_variance(linear):
  model, params, x, log_px = linear
  values = many(lambda k: helpers.bound(vae_jax.elbo, model, params, x, k,
                                        estimator="monte_carlo"), 20)
  np.testing.assert_allclose(values, np.broadcast_to(log_px, values.shape), rtol=0, atol=1e-4)
  assert float(values.std(0).max()) < 1e-5
  # Every importance weight is p(x): the IWAE bound equals log p(x) for every k.
  for k in (1, 7, 100):
    iw = helpers.bound(vae_jax.iwae_bound, model, params, x, jax.random.key(k), num_samples=k,
                       chunk_size=30)
    np.testing.assert_allclose(iw, log_px, rtol=0, atol=1e-4)
  # The analytic-KL estimator has the same expectation (but not zero variance):
  # 20 keys x 50 samples, so its standard error is sd(one sample) / sqrt(1000).
  b = many(lambda k: helpers.bound(vae_jax.elbo, model, params, x, k, num_samples=50), 20).mean(0)
  se = many(lambda k: helpers.bound(vae_jax.elbo, model, params, x, k), 1000).std(0) / np.sqrt(1000)
  assert np.all(np.abs(b - log_px) < 4 * se + 1e-3)


def test_worse_encoder_gives_smaller_bound(linear):
  model, params, x, log_px = linear
  worse = helpers.worse_encoder(params)
  # Exact expectation via many samples: the gap is KL(q || p(z|x)) > 0.
  values = many(lambda k: helpers.bound(vae_jax.elbo, model, worse, x, k, num_samples=10), 50).mean(0)
  assert np.all(values < log_px - 0.05)


def test_iwae_rises_toward_log_px_as_k_grows(linear):
  model, params, x, log_px = linear
  worse = helpers.worse_encoder(params, shift=1.0, logvar_shift=1.0)
  means = []
  for k in (1, 10, 100, 1000):
    v = many(lambda key: helpers.bound(vae_jax.iwae_bound, model, worse, x, key, num_samples=k), 10)
    means.append(float(v.mean()))
  gaps = float(np.mean(log_px)) - np.array(means)
  assert np.all(np.diff(means) > 0), means
  assert np.all(gaps > -1e-3), gaps
  assert gaps[-1] < 0.1 * gaps[0], gaps


def test_estimators_have_same_expectation_and_analytic_has_lower_variance(mlp):
  model, params, x = mlp
  n = 4000
  a = many(lambda k: helpers.bound(vae_jax.elbo, model, params, x, k, estimator="monte_carlo"), n)
  b = many(lambda k: helpers.bound(vae_jax.elbo, model, params, x, k, estimator="analytic"), n)
  se = np.sqrt(a.var(0) / n + b.var(0) / n)
  assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4 * se), (a.mean(0) - b.mean(0)) / se
  assert np.all(b.var(0) < a.var(0))


def test_iwae_with_one_sample_equals_monte_carlo_elbo(linear, mlp):
  for model, params, x in (linear[:3], mlp):
    key = jax.random.key(7)
    np.testing.assert_allclose(
        helpers.bound(vae_jax.iwae_bound, model, params, x, key, num_samples=1),
        helpers.bound(vae_jax.elbo, model, params, x, key, estimator="monte_carlo"),
        rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(
        helpers.bound(vae_jax.log_weights, model, params, x, key, num_samples=5).mean(0),
        helpers.bound(vae_jax.elbo, model, params, x, key, num_samples=5,
                      estimator="monte_carlo"),
        rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("chunk", [7, pytest.param(1, marks=pytest.mark.slow),
                                   pytest.param(50, marks=pytest.mark.slow), 64])
def test_iwae_does_not_depend_on_chunk_size(mlp, chunk):
  model, params, x = mlp
  key = jax.random.key(3)
  whole = helpers.bound(vae_jax.iwae_bound, model, params, x, key, num_samples=50,
                        chunk_size=50)
  # The plain definition: log mean exp of all 50 log weights at once.
  logw = helpers.bound(vae_jax.log_weights, model, params, x, key, num_samples=50)
  np.testing.assert_allclose(whole, jax.nn.logsumexp(logw, 0) - np.log(50), rtol=1e-6)
  chunked = helpers.bound(vae_jax.iwae_bound, model, params, x, key, num_samples=50,
                          chunk_size=chunk)
  np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-5)


def test_iwae_stderr_matches_spread_over_keys(linear):
  model, params, x, _ = linear
  # The delta method holds where the weights are not heavy-tailed (a near
  # posterior); with heavy tails it underestimates, as every such estimate does.
  worse = helpers.worse_encoder(params, shift=0.3, logvar_shift=0.2)
  fn = lambda k: helpers.bound(vae_jax.iwae_bound_and_stderr, model, worse, x[:20], k,
                               num_samples=200)
  bounds, stderrs = many(fn, 300)
  ratio = stderrs.mean(0) / bounds.std(0)
  assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio


def test_vmap_over_samples_equals_python_loop(mlp):
  model, params, x = mlp
  key, L = jax.random.key(11), 6
  enc, dec, _ = model.parts(params)
  mean, logvar = enc(x).mean, enc(x).logvar
  lls, kls = [], []
  for k in jax.random.split(key, L):
    z = D.gaussian_sample(k, mean, logvar)
    lls.append(dec(z).log_prob(x))
    kls.append(D.gaussian_log_prob(z, mean, logvar) - D.standard_normal_log_prob(z))
  ll = np.mean(lls, 0)
  for est, kl in (("analytic", D.kl_standard_normal(mean, logvar)),
                  ("monte_carlo", np.mean(kls, 0))):
    terms = helpers.bound(vae_jax.elbo_terms, model, params, x, key, num_samples=L,
                          estimator=est)
    np.testing.assert_allclose(terms.reconstruction, ll, rtol=1e-5)
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.elbo, ll - kl, rtol=1e-5)


def test_one_sample_equals_its_vmap(mlp):
  model, params, x = mlp
  key = jax.random.key(12)
  enc, dec, _ = model.parts(params)
  mean, logvar = enc(x).mean, enc(x).logvar
  keys = jax.random.split(key, 1)
  def one(k):
    z = D.gaussian_sample(k, mean, logvar)
    return (dec(z).log_prob(x)
            - D.gaussian_log_prob(z, mean, logvar) + D.standard_normal_log_prob(z))
  np.testing.assert_allclose(helpers.bound(vae_jax.log_weights, model, params, x, key,
                                           num_samples=1),
                             jax.vmap(one)(keys), rtol=1e-6)


def test_bad_arguments_raise_clear_errors(mlp):
  model, params, x = mlp
  with pytest.raises(ValueError, match="num_samples=0"):
    helpers.bound(vae_jax.elbo, model, params, x, jax.random.key(0), num_samples=0)
  with pytest.raises(ValueError, match="estimator='mc'"):
    helpers.bound(vae_jax.elbo, model, params, x, jax.random.key(0), estimator="mc")


@pytest.mark.parametrize("bound,kwargs", [
    ("elbo", dict(num_samples=3, estimator="analytic")),
    ("elbo", dict(num_samples=3, estimator="monte_carlo")),
    pytest.param("iwae_bound", dict(num_samples=30, chunk_size=8),
                 marks=pytest.mark.slow),  # op by op, 4 chunks: 7 s
])
def test_jit_gives_the_eager_numbers_and_the_key_decides_them(bound, kwargs):
  # Eager (op by op, jax.disable_jit) and compiled (XLA fuses and reorders) are two
  # different computations of the same numbers; a bound that read Python state at
  # trace time, or ignored its key, would fail here.
  model, params, x = helpers.small_vae(20, 4, 16, n=8)
  fn = functools.partial(helpers.bound, getattr(vae_jax, bound), model, **kwargs)
  key = jax.random.key(5)
  with jax.disable_jit():
    eager = np.asarray(fn(params, x, key))
  compiled = jax.jit(fn)
  np.testing.assert_allclose(compiled(params, x, key), eager, rtol=1e-5)
  np.testing.assert_array_equal(compiled(params, x, key), compiled(params, x, key))
  assert not np.allclose(compiled(params, x, jax.random.key(6)), eager)


def test_an_encoder_or_decoder_returning_arrays_is_one_line_naming_what_to_return():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vae_jax import objectives  # pylint: disable=g-import-not-at-top
  distributions = D
  x = jnp.zeros((3, 4))
  pair = lambda x: (jnp.zeros((3, 2)), jnp.zeros((3, 2)))  # (mean, logvar), as in PyTorch
  gaussian = lambda x: distributions.DiagonalGaussian(*pair(x))
  logits = lambda z: jnp.zeros(z.shape[:-1] + (4,))
  for fn in (objectives.elbo, objectives.iwae_bound):
    with pytest.raises(objectives.NotADistribution,
                       match=r"^the encoder returned a tuple of 2, not a posterior: return an "
                             r"object with sample\(key\) and log_prob\(z\), e.g. "
                             r"vae_jax.distributions.DiagonalGaussian\(mean, logvar\)"):
      fn(pair, logits, x, jax.random.key(0), num_samples=2)
    with pytest.raises(objectives.NotADistribution,
                       match=r"^the decoder returned an array of shape \(3, 4\), not a likelihood: return an "
                             r"object with log_prob\(x\), e.g. .*Bernoulli\(logits\)"):
      fn(gaussian, logits, x, jax.random.key(0), num_samples=2)
