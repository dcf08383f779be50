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
    check_grads(lambda l: D.bernoulli_log_prob(x, l), (a,), order=2)
    check_grads(lambda m, v: D.gaussian_log_prob(x, m, v), (a, b), order=2)
    check_grads(D.kl_standard_normal, (b, c), order=2)


def test_bernoulli_sample_frequency():
  logits = jnp.full((100_000,), 1.0)
  freq = D.bernoulli_sample(jax.random.key(0), logits).mean()
  p = 1 / (1 + np.exp(-1.0))
  assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 100_000)
