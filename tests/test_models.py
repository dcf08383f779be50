"""The encoder/decoder MLPs and the presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import models
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
  q = model.parts(params).encoder(x)
  np.testing.assert_allclose(jnp.concatenate([q.mean, q.logvar], -1), out, rtol=1e-5)


def test_likelihood_heads_read_the_decoder_outputs():
  x = jax.random.uniform(jax.random.key(1), (3, 6))
  z = jax.random.normal(jax.random.key(2), (3, 2))
  for name, head in vae_jax.LIKELIHOODS.items():
    model = vae_jax.VAE(input_dim=6, latent_dim=2, hidden_sizes=(4,), likelihood=head)
    params = vae_jax.init_params(model, jax.random.key(0))
    p = params["params"]["decoder"]["mlp"]
    h = jax.nn.relu(z @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    out = (h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]).reshape(3, 6, -1)
    want = {"bernoulli": lambda: D.bernoulli_log_prob(x, out[..., 0]),
            "continuous_bernoulli": lambda: D.ContinuousBernoulli(out[..., 0]).log_prob(x),
            "gaussian": lambda: D.gaussian_log_prob(x, out[..., 0], out[..., 1]),
            "gaussian_sigmoid_mean": lambda: D.gaussian_log_prob(
                x, jax.nn.sigmoid(out[..., 0]), out[..., 1]),
            "discretized_logistic": lambda: D.DiscretizedLogistic(
                out[..., 0], jnp.maximum(out[..., 1], -7.0)).log_prob(x)}[name]()
    np.testing.assert_allclose(model.parts(params).decoder(z).log_prob(x), want, rtol=1e-5,
                               err_msg=name)


def test_gaussian_mean_is_unbounded_unless_squashed():
  z = 30 * jax.random.normal(jax.random.key(2), (50, 2))
  for squash in (False, True):
    model = vae_jax.VAE(input_dim=6, latent_dim=2, hidden_sizes=(4,),
                        likelihood=models.GaussianHead(squash_mean=squash))
    mean = model.parts(vae_jax.init_params(model, jax.random.key(0))).decoder(z).mean()
    assert bool(jnp.all((mean >= 0) & (mean <= 1))) == squash


def test_bad_model_arguments():
  with pytest.raises(ValueError, match="activation='sigmoidal'"):
    vae_jax.init_params(vae_jax.VAE(activation="sigmoidal"), jax.random.key(0))
  with pytest.raises(ValueError, match="likelihood='poisson'"):
    models.likelihood_head("poisson")
