"""Generation from the prior, reconstruction and interpolation."""

import jax
import jax.numpy as jnp
import numpy as np

import vae_jax
from tests import helpers


def _model():
  model = vae_jax.VAE(input_dim=10, latent_dim=3, hidden_sizes=(8,))
  return model, vae_jax.init_params(model, jax.random.key(0))


def test_generate_decodes_prior_draws():
  model, params = _model()
  parts = model.parts(params)
  key = jax.random.key(1)
  images = vae_jax.generate(parts, key, 5)
  z = vae_jax.StandardNormal(3).sample(jax.random.split(key)[0], (5,))
  np.testing.assert_allclose(images, vae_jax.decode(parts, z), rtol=1e-6)
  assert np.all((images > 0) & (images < 1))
  draws = vae_jax.generate(parts, key, 5, mean=False)
  assert set(np.unique(draws)) <= {0.0, 1.0}


def test_prior_draws_are_standard_normal():
  z = vae_jax.StandardNormal(2).sample(jax.random.key(0), (100_000,))
  assert np.all(np.abs(z.mean(0)) < 4 / np.sqrt(100_000))
  np.testing.assert_allclose(np.cov(np.asarray(z).T), np.eye(2), atol=0.02)


def test_reconstruct_and_interpolate():
  model, params = _model()
  x = helpers.binary_data(jax.random.key(2), n=2, dim=10, p=0.5)
  parts = model.parts(params)
  mean = parts.encoder(x).mean
  recon = vae_jax.reconstruct(parts, x)
  np.testing.assert_allclose(recon, vae_jax.decode(parts, mean), rtol=1e-6)
  assert not np.allclose(vae_jax.reconstruct(parts, x, jax.random.key(3)), recon)
  line = vae_jax.interpolate(parts, x[0], x[1], 4)
  np.testing.assert_allclose(line[jnp.array([0, 3])], recon, rtol=1e-5, atol=1e-6)
