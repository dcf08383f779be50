"""The encoder/decoder MLPs and the presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import distributions as D


def _shapes(params):
  return jax.tree_util.tree_map(lambda a: a.shape, params)["params"]


def test_pytorch_example_preset_has_its_layer_sizes():
  s = _shapes(vae_jax.init_params(vae_jax.pytorch_example(), jax.random.key(0)))
  assert s["encoder"]["mlp"]["dense_0"]["kernel"] == (784, 400)
  assert s["encoder"]["mlp"]["dense_1"]["kernel"] == (400, 40)  # mean and logvar heads
  assert s["decoder"]["mlp"]["dense_0"]["kernel"] == (20, 400)
  assert s["decoder"]["mlp"]["dense_1"]["kernel"] == (400, 784)
  n = sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(
      vae_jax.init_params(vae_jax.pytorch_example(), jax.random.key(0))))
  # pytorch/examples vae/main.py: fc1, fc21, fc22, fc3, fc4.
  assert n == (784 * 400 + 400) + 2 * (400 * 20 + 20) + (20 * 400 + 400) + (400 * 784 + 784)


def test_burda_and_frey_presets():
  s = _shapes(vae_jax.init_params(vae_jax.burda_2016(), jax.random.key(0)))
  assert [s["encoder"]["mlp"][f"dense_{i}"]["kernel"] for i in range(3)] == [
      (784, 200), (200, 200), (200, 100)]
  frey = vae_jax.kingma_welling_frey(latent_dim=2)
  s = _shapes(vae_jax.init_params(frey, jax.random.key(0)))
  assert s["decoder"]["mlp"]["dense_1"]["kernel"] == (200, 2 * 560)


def test_activation_is_applied_between_layers_only():
  model = vae_jax.VAE(input_dim=3, latent_dim=2, hidden_sizes=(5,), activation="tanh")
  params = vae_jax.init_params(model, jax.random.key(0))
  x = jnp.array([[0.3, -1.0, 2.0]])
  p = params["params"]["encoder"]["mlp"]
  h = jnp.tanh(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
  out = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
  mean, logvar = model.apply(params, x, method=model.encode)
  np.testing.assert_allclose(jnp.concatenate([mean, logvar], -1), out, rtol=1e-5)


def test_log_likelihood_uses_the_decoder_outputs():
  for likelihood in ("bernoulli", "gaussian"):
    model = vae_jax.VAE(input_dim=6, latent_dim=2, hidden_sizes=(4,), likelihood=likelihood)
    params = vae_jax.init_params(model, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, 6))
    z = jax.random.normal(jax.random.key(2), (3, 2))
    out = model.apply(params, z, method=model.decode)
    want = (D.bernoulli_log_prob(x, out) if likelihood == "bernoulli"
            else D.gaussian_log_prob(x, *out))
    np.testing.assert_allclose(model.apply(params, x, z, method=model.log_likelihood), want)
    mean = model.apply(params, z, method=model.mean_output)
    assert np.all((mean > 0) & (mean < 1))


def test_bad_model_arguments():
  with pytest.raises(ValueError, match="activation='sigmoidal'"):
    vae_jax.init_params(vae_jax.VAE(activation="sigmoidal"), jax.random.key(0))
  with pytest.raises(ValueError, match="likelihood='poisson'"):
    vae_jax.init_params(vae_jax.VAE(likelihood="poisson"), jax.random.key(0))
