"""Reparameterization and score-function gradients: same mean, different variance."""

import jax
import jax.flatten_util
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from tests import helpers


@pytest.fixture(scope="module")
def problem():
  return helpers.small_vae(12, 2, 8, n=4)


def _encoder_grads(objective, model, params, x, n, estimator):
  """Flattened encoder gradients of the batch-mean objective for n keys: [n, P]."""
  def grad_one(key):
    g = jax.grad(lambda p: helpers.bound(objective, model, p, x, key,
                                         estimator=estimator).mean())(params)
    return jax.flatten_util.ravel_pytree(g["params"]["encoder"])[0]
  return jax.jit(jax.vmap(grad_one))(jax.random.split(jax.random.key(42), n))


@pytest.mark.parametrize("estimator", ["analytic", "monte_carlo"])
def test_gradients_agree_in_expectation_score_function_has_larger_variance(problem, estimator):
  model, params, x = problem
  n = 20_000
  rep = _encoder_grads(vae_jax.elbo, model, params, x, n, estimator)
  sf = _encoder_grads(vae_jax.score_function_surrogate, model, params, x, n, estimator)
  se = np.sqrt(rep.var(0) / n + sf.var(0) / n)
  z = (rep.mean(0) - sf.mean(0)) / se
  # Coordinates whose gradient is not identically zero in both.
  live = se > 1e-7
  assert live.sum() > 10
  assert np.all(np.abs(z[live]) < 4.5), np.sort(np.abs(z[live]))[-5:]
  # The total variance (trace of the covariance) is several times larger.
  assert sf.var(0).sum() > 3 * rep.var(0).sum(), (sf.var(0).sum(), rep.var(0).sum())


def test_surrogate_value_is_the_elbo_and_decoder_gradient_is_the_same(problem):
  model, params, x = problem
  key = jax.random.key(3)
  for est in ("analytic", "monte_carlo"):
    np.testing.assert_allclose(
        helpers.bound(vae_jax.score_function_surrogate, model, params, x, key, num_samples=4,
                      estimator=est),
        helpers.bound(vae_jax.elbo, model, params, x, key, num_samples=4, estimator=est),
        rtol=1e-6)
  g_rep = jax.grad(lambda p: helpers.bound(vae_jax.elbo, model, p, x, key).sum())(params)
  g_sf = jax.grad(lambda p: helpers.bound(vae_jax.score_function_surrogate, model, p, x,
                                          key).sum())(params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         g_rep["params"]["decoder"], g_sf["params"]["decoder"])


def test_reparameterization_gradient_matches_finite_differences(problem):
  model, params, x = problem
  key = jax.random.key(9)
  with jax.enable_x64(True):
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    jax.test_util.check_grads(
        lambda p: helpers.bound(vae_jax.elbo, model, p, x.astype(jnp.float64), key,
                                num_samples=3).sum(),
        (p64,), order=1, modes=("rev",))
