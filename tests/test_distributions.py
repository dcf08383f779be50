"""Facts about the log-densities and the KL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special, stats

from vae_jax import distributions as D


def test_gaussian_log_prob_matches_scipy():
  rng = np.random.default_rng(0)
  x, mean = rng.normal(size=(2, 5, 7))
  logvar = rng.normal(size=(5, 7))
  want = stats.norm(mean, np.exp(logvar / 2)).logpdf(x).sum(-1)
  got = D.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(logvar))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(D.standard_normal_log_prob(jnp.asarray(x)),
                             stats.norm().logpdf(x).sum(-1), rtol=1e-5)


def test_gaussian_sample_has_the_right_moments():
  mean, logvar = jnp.array([1.0, -2.0, 0.0]), jnp.array([0.0, 1.0, -2.0])
  z = D.gaussian_sample(jax.random.key(0), jnp.broadcast_to(mean, (200_000, 3)),
                        jnp.broadcast_to(logvar, (200_000, 3)))
  se = np.exp(logvar / 2) / np.sqrt(200_000)
  assert np.all(np.abs(z.mean(0) - mean) < 4 * se)
  np.testing.assert_allclose(z.var(0), np.exp(logvar), rtol=0.02)


def test_closed_form_kl_equals_its_monte_carlo_estimate():
  mean = jnp.array([0.5, -1.0, 2.0, 0.0])
  logvar = jnp.array([-1.0, 0.5, 0.0, -3.0])
  n = 100_000
  z = D.gaussian_sample(jax.random.key(1), jnp.broadcast_to(mean, (n, 4)),
                        jnp.broadcast_to(logvar, (n, 4)))
  samples = D.gaussian_log_prob(z, mean, logvar) - D.standard_normal_log_prob(z)
  se = samples.std() / np.sqrt(n)
  kl = D.kl_standard_normal(mean, logvar)
  assert abs(samples.mean() - kl) < 4 * se, (samples.mean(), kl, se)
  assert D.kl_standard_normal(jnp.zeros(4), jnp.zeros(4)) == 0.0
  # Against the general formula for two diagonal Gaussians.
  var = np.exp(logvar)
  want = 0.5 * np.sum(var + mean**2 - 1 - np.log(var))
  np.testing.assert_allclose(kl, want, rtol=1e-6)


LOGITS = np.array([-1e4, -1e3, -105.0, -88.0, -20.0, -1.0, 0.0, 1e-3, 1.0, 20.0, 88.0,
                   104.0, 105.0, 106.0, 1e3, 1e4], np.float32)


@pytest.mark.parametrize("x", [0.0, 1.0, 0.3])
def test_bernoulli_log_prob_exact_and_finite_for_extreme_logits(x):
  logits = jnp.asarray(LOGITS)[:, None]
  xs = jnp.full_like(logits, x)
  got = D.bernoulli_log_prob(xs, logits)
  # float64 reference: x log sigmoid(l) + (1 - x) log sigmoid(-l).
  l64 = LOGITS.astype(np.float64)
  want = -x * np.logaddexp(0, -l64) - (1 - x) * np.logaddexp(0, l64)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  grad = jax.vmap(jax.grad(lambda l, x: D.bernoulli_log_prob(x, l[None])), (0, 0))(
      jnp.asarray(LOGITS), jnp.full(LOGITS.shape, x))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, x - special.expit(l64), atol=1e-6)


def test_softplus_matches_jax_and_float64():
  l = jnp.asarray(np.concatenate([LOGITS, np.linspace(-30, 30, 1001, dtype=np.float32)]))
  np.testing.assert_allclose(D.softplus(l), jax.nn.softplus(l), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(D.softplus(l), np.logaddexp(0, np.asarray(l, np.float64)),
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(jax.vmap(jax.grad(D.softplus))(l), special.expit(np.asarray(l)),
                             rtol=1e-6, atol=1e-7)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(3, 4)))
    a, b, c = (jnp.asarray(rng.normal(size=(3, 4))) for _ in range(3))
    # Compiled: each derivative one program, not each operation one.
    check_grads(jax.jit(lambda l: D.bernoulli_log_prob(x, l)), (a,), order=2)
    check_grads(jax.jit(lambda m, v: D.gaussian_log_prob(x, m, v)), (a, b), order=2)
    check_grads(jax.jit(D.kl_standard_normal), (b, c), order=2)


def test_bernoulli_sample_frequency():
  logits = jnp.full((100_000,), 1.0)
  freq = D.bernoulli_sample(jax.random.key(0), logits).mean()
  p = 1 / (1 + np.exp(-1.0))
  assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 100_000)


@pytest.mark.parametrize("lam", [1e-4, 0.3, 0.4999, 0.5, 0.5001, 0.9])
def test_continuous_bernoulli_integrates_to_one(lam):
  from scipy import integrate
  logit = jnp.float32(np.log(lam) - np.log1p(-lam))
  dist = D.ContinuousBernoulli(jnp.full((1,), logit), event_ndims=0)
  density = jax.jit(lambda x: jnp.exp(dist.log_prob(x)))
  total, _ = integrate.quad(lambda x: float(density(jnp.float32(x))[0]), 0.0, 1.0, limit=200)
  assert total == pytest.approx(1.0, abs=2e-5)
  # Its mean is the density's first moment.
  first, _ = integrate.quad(lambda x: x * float(density(jnp.float32(x))[0]), 0.0, 1.0, limit=200)
  assert float(dist.mean[0]) == pytest.approx(first, abs=2e-5)


def test_continuous_bernoulli_is_finite_at_one_half_and_matches_the_closed_form():
  x = jnp.asarray([0.0, 0.2, 0.7, 1.0])
  f = jax.jit(lambda l: D.ContinuousBernoulli(jnp.full(4, l)).log_prob(x))
  grad = jax.jit(jax.grad(f))
  assert np.isfinite(float(f(0.0))) and np.isfinite(float(grad(0.0)))
  assert float(f(0.0)) == pytest.approx(4 * np.log(2.0) + np.sum(np.log(0.5) * np.ones(4)),
                                        abs=1e-6)
  # The gradient is continuous through 0 (the series meets the direct form).
  assert float(grad(0.0)) == pytest.approx(float((grad(1e-3) + grad(-1e-3)) / 2), abs=1e-4)
  for lam in (0.05, 0.3, 0.8):
    l = np.log(lam / (1 - lam))
    c = 2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam)
    ref = np.sum(np.log(c) + np.asarray(x) * np.log(lam) + (1 - np.asarray(x)) * np.log(1 - lam))
    assert float(f(jnp.float32(l))) == pytest.approx(ref, rel=1e-5)
  draws = jax.jit(D.ContinuousBernoulli(jnp.full((200_000,), 1.5)).sample)(jax.random.key(0))
  assert float(draws.min()) >= 0 and float(draws.max()) <= 1
  assert float(draws.mean()) == pytest.approx(
      float(D.ContinuousBernoulli(jnp.asarray([1.5])).mean[0]), abs=3e-3)


@pytest.mark.parametrize("loc,log_scale", [(0.5, -3.0), (-4.0, 0.0), (5.0, -1.0),
                                           (0.3, -12.0), (0.5, 4.0), (0.0, -7.0)])
def test_discretized_logistic_bins_sum_to_one(loc, log_scale):
  bins = jnp.arange(256) / 255.0
  dist = D.DiscretizedLogistic(jnp.full(256, loc), jnp.full(256, log_scale), event_ndims=0)
  logp = dist.log_prob(bins)
  assert bool(jnp.all(jnp.isfinite(logp)))
  assert float(jnp.sum(jnp.exp(logp.astype(jnp.float64) if jax.config.x64_enabled else logp))) \
      == pytest.approx(1.0, abs=1e-5)
  # The exact mean is sum_k k/255 P(k).
  mean = float(dist.mean[0])
  assert mean == pytest.approx(float(jnp.sum(bins * jnp.exp(logp))), abs=1e-5)


def test_bits_per_dim():
  # A uniform distribution over 256 levels is exactly 8 bits per dimension.
  assert float(D.bits_per_dim(jnp.float32(-784 * np.log(256.0)), 784)) == pytest.approx(8.0)


@pytest.mark.parametrize("loc", [0.0, 0.4, 1.0])
def test_discretized_logistic_is_exact_in_float32_at_every_scale(loc):
  # Reference: float64, the bin mass sigmoid(a) - sigmoid(b) through the exact identity
  # sigmoid(a) sigmoid(-b) (1 - exp(-(a - b))), and plainly where float64 still can.
  from scipy.special import expit
  bins = jnp.arange(256) / 255.0
  for log_scale in (0.0, 3.0, 8.0, 11.0, 15.0):
    dist = D.DiscretizedLogistic(jnp.full(256, loc), jnp.full(256, log_scale), event_ndims=0)
    got = np.asarray(dist.log_prob(bins), np.float64)
    s, k = np.exp(log_scale), np.arange(256)
    a, b = ((k + 0.5) / 255 - loc) / s, ((k - 0.5) / 255 - loc) / s
    ref = np.log(expit(a) * expit(-b) * -np.expm1(-1 / (255 * s)))
    ref[0], ref[-1] = np.log(expit(a[0])), np.log(expit(-b[-1]))
    assert np.all(np.isfinite(got)), log_scale
    np.testing.assert_allclose(got, ref, rtol=3e-7, err_msg=f"log_scale={log_scale}")
    if log_scale <= 11:  # the plain difference still has 8 digits in float64
      plain = np.log(expit(a[1:-1]) - expit(b[1:-1]))
      np.testing.assert_allclose(got[1:-1], plain, rtol=3e-7)
    assert float(jnp.sum(jnp.exp(dist.log_prob(bins)))) == pytest.approx(1.0, abs=1e-5)


def test_discretized_logistic_refuses_inputs_outside_the_unit_interval():
  dist = D.DiscretizedLogistic(jnp.zeros(3), jnp.zeros(3))
  with pytest.raises(ValueError, match=r"x spans \[0, 255\].*divide 8-bit levels by 255"):
    dist.log_prob(jnp.asarray([0.0, 128.0, 255.0]))
  # Under jit the value cannot raise: it is NaN, which stops training as a non-finite loss.
  assert np.isnan(float(jax.jit(dist.log_prob)(jnp.asarray([0.0, 128.0, 255.0]))))
  assert np.isfinite(float(jax.jit(dist.log_prob)(jnp.asarray([0.0, 0.5, 1.0]))))
  # Data closed over by a compiled function is checked as data, not traced.
  levels = jnp.asarray([0.0, 0.5, 1.0])
  assert np.isfinite(float(jax.jit(lambda loc: D.DiscretizedLogistic(
      loc, jnp.zeros(3)).log_prob(levels))(jnp.zeros(3))))


def test_continuous_bernoulli_normalizer_is_exact_in_float64_near_one_half():
  with jax.enable_x64(True):
    # |u| = |l| / 2 just inside and outside the series' range, and well inside it.
    l = np.asarray([-0.199, -0.05, 1e-3, 0.1, 0.1999, 0.2001, 0.3])
    got = np.asarray(D._log_cb_normalizer(jnp.asarray(l, jnp.float64)))  # pylint: disable=protected-access
    u = l / 2
    ref = np.log(2.0) + np.log(u / np.tanh(u))  # float64 is accurate here
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-15)
