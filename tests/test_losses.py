"""The losses the train step takes, and the core over any model: facts about
gradients (IWAE standard vs DReG, k = 1, beta = 0), the KL warm-up, and the
same ELBO from linen, NNX and plain functions with the same weights."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vae_jax
from vae_jax import distributions as D
from vae_jax import losses
from tests import helpers


@pytest.fixture(scope="module")
def problem():
  return helpers.small_vae(12, 3, 10, n=4)


def _encoder_grad(loss_fn, params, x, key):
  g = jax.grad(lambda p: loss_fn(p, x, key, 0)[0])(params)
  return jax.flatten_util.ravel_pytree(g["params"]["encoder"])[0]


def test_dreg_and_standard_iwae_gradients_agree_and_dreg_has_lower_variance(problem):
  model, params, x = problem
  n, k = 3000, 50
  keys = jax.random.split(jax.random.key(0), n)
  grads = {}
  for name in ("standard", "dreg"):
    loss = losses.iwae_loss(model.parts, num_samples=k, gradient=name)
    grads[name] = np.asarray(jax.jit(jax.vmap(lambda key: _encoder_grad(loss, params, x, key)))(
        keys), np.float64)
  # Same expectation: every coordinate within 4.5 standard errors of the difference.
  diff = grads["dreg"].mean(0) - grads["standard"].mean(0)
  se = np.sqrt(grads["dreg"].var(0) / n + grads["standard"].var(0) / n)
  assert np.all(np.abs(diff) < 4.5 * se + 1e-7), np.max(np.abs(diff) / se)
  assert grads["dreg"].var(0).sum() < 0.5 * grads["standard"].var(0).sum()
  # DReG's value is the bound's.
  key = jax.random.key(3)
  @jax.jit
  def surrogate_and_bound(params):
    enc, dec, prior = model.parts(params)
    return (vae_jax.iwae_surrogate(enc, dec, x, key, prior=prior, num_samples=k,
                                   gradient="dreg"),
            vae_jax.iwae_bound(enc, dec, x, key, prior=prior, num_samples=k))
  np.testing.assert_allclose(*surrogate_and_bound(params), rtol=1e-5)


def test_iwae_loss_with_one_sample_gives_the_elbo_gradient(problem):
  model, params, x = problem
  key = jax.random.key(4)
  iwae = losses.iwae_loss(model.parts, num_samples=1)
  elbo = losses.elbo_loss(model.parts, estimator="monte_carlo")
  g_iwae = jax.jit(jax.grad(lambda p: iwae(p, x, key, 0)[0]))(params)
  g_elbo = jax.jit(jax.grad(lambda p: elbo(p, x, key, 0)[0]))(params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         g_iwae, g_elbo)


def test_beta_zero_leaves_no_kl_in_the_encoder_gradient(problem):
  model, params, x = problem
  key = jax.random.key(5)
  loss = losses.elbo_loss(model.parts, beta=0.0)
  def recon_only(p):
    enc, dec, prior = model.parts(p)
    return -vae_jax.elbo_terms(enc, dec, x, key, prior=prior).reconstruction.mean()
  g = jax.jit(jax.grad(lambda p: loss(p, x, key, 0)[0]))(params)
  g_recon = jax.jit(jax.grad(recon_only))(params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         g, g_recon)
  # With beta = 1 the encoder gradient differs by exactly the KL's gradient.
  def kl(p):
    return vae_jax.kl_divergence(model.parts(p).encoder(x), D.StandardNormal()).mean()
  g1 = jax.jit(jax.grad(lambda p: losses.elbo_loss(model.parts)(p, x, key, 0)[0]))(params)
  jax.tree_util.tree_map(lambda a, b, c: np.testing.assert_allclose(a, b + c, rtol=1e-5,
                                                                    atol=1e-6),
                         g1, g_recon, jax.jit(jax.grad(kl))(params))


def test_kl_warmup_gives_the_documented_weight():
  warm = losses.kl_warmup(100)
  for step, beta in ((0, 0.0), (25, 0.25), (50, 0.5), (100, 1.0), (10_000, 1.0)):
    assert float(warm(step)) == pytest.approx(beta)
  assert float(losses.kl_warmup(0)(0)) == 1.0
  model, params, x = helpers.small_vae(12, 3, 10, n=4)
  loss = losses.elbo_loss(model.parts, beta=warm)
  _, m = loss(params, x, jax.random.key(0), 30)
  assert float(m["beta"]) == pytest.approx(0.3)
  assert float(m["objective"]) == pytest.approx(float(m["reconstruction"] - 0.3 * m["kl"]),
                                                rel=1e-6)


class NNXVAE(nnx.Module):
  """The same MLP VAE as `vae_jax.VAE(hidden_sizes=(h,), activation="tanh")`, in NNX."""

  def __init__(self, d, z, h, rngs):
    self.enc1, self.enc2 = nnx.Linear(d, h, rngs=rngs), nnx.Linear(h, 2 * z, rngs=rngs)
    self.dec1, self.dec2 = nnx.Linear(z, h, rngs=rngs), nnx.Linear(h, d, rngs=rngs)

  def encode(self, x):
    mean, logvar = jnp.split(self.enc2(jnp.tanh(self.enc1(x))), 2, axis=-1)
    return D.DiagonalGaussian(mean, logvar)

  def decode(self, z):
    return D.Bernoulli(self.dec2(jnp.tanh(self.dec1(z))))


def _copy_linen_weights(nnx_model, params):
  p = params["params"]
  for layer, src in ((nnx_model.enc1, p["encoder"]["mlp"]["dense_0"]),
                     (nnx_model.enc2, p["encoder"]["mlp"]["dense_1"]),
                     (nnx_model.dec1, p["decoder"]["mlp"]["dense_0"]),
                     (nnx_model.dec2, p["decoder"]["mlp"]["dense_1"])):
    layer.kernel[...], layer.bias[...] = src["kernel"], src["bias"]


def test_nnx_and_plain_functions_give_the_linen_elbo(problem):
  model, params, x = problem
  key = jax.random.key(6)
  ref = helpers.bound(vae_jax.elbo, model, params, x, key, num_samples=3)
  m = NNXVAE(12, 3, 10, nnx.Rngs(0))
  _copy_linen_weights(m, params)
  np.testing.assert_allclose(vae_jax.elbo(m.encode, m.decode, x, key, num_samples=3), ref,
                             rtol=1e-6)
  p = params["params"]
  def encoder(x):
    e = p["encoder"]["mlp"]
    h = jnp.tanh(x @ e["dense_0"]["kernel"] + e["dense_0"]["bias"])
    mean, logvar = jnp.split(h @ e["dense_1"]["kernel"] + e["dense_1"]["bias"], 2, axis=-1)
    return D.DiagonalGaussian(mean, logvar)
  def decoder(z):
    d = p["decoder"]["mlp"]
    h = jnp.tanh(z @ d["dense_0"]["kernel"] + d["dense_0"]["bias"])
    return D.Bernoulli(h @ d["dense_1"]["kernel"] + d["dense_1"]["bias"])
  np.testing.assert_allclose(vae_jax.elbo(encoder, decoder, x, key, num_samples=3), ref,
                             rtol=1e-6)
  # nnx.grad through the same call: the gradient of the linen model's loss.
  g = nnx.grad(lambda mm: -vae_jax.elbo(mm.encode, mm.decode, x, key, num_samples=3).mean())(m)
  g_linen = jax.jit(jax.grad(lambda q: -helpers.bound(vae_jax.elbo, model, q, x, key,
                                                      num_samples=3).mean()))(params)
  np.testing.assert_allclose(g.enc1.kernel[...],
                             g_linen["params"]["encoder"]["mlp"]["dense_0"]["kernel"], rtol=1e-5,
                             atol=1e-7)


def test_learned_prior_needs_monte_carlo_and_a_single_component_equals_the_standard_one(problem):
  model, params, x = problem
  enc, dec, _ = model.parts(params)
  key = jax.random.key(7)
  one = D.MixtureOfGaussians(jnp.zeros(1), jnp.zeros((1, 3)), jnp.zeros((1, 3)))
  mc = jax.jit(lambda prior: vae_jax.elbo(enc, dec, x, key, prior=prior,
                                          estimator="monte_carlo"))
  np.testing.assert_allclose(mc(one), mc(D.StandardNormal()), rtol=1e-6)
  with pytest.raises(NotImplementedError, match="use estimator='monte_carlo'"):
    vae_jax.elbo(enc, dec, x, key, prior=one)
  # A two-component prior is learned: its parameters get a gradient.
  two = D.MixtureOfGaussians(jnp.zeros(2), jnp.ones((2, 3)) * jnp.array([[1.], [-1.]]),
                             jnp.zeros((2, 3)))
  g = jax.jit(jax.grad(lambda pr: mc(pr).sum()))(two)
  assert float(jnp.abs(g.means).sum()) > 0
