"""Generation from the prior and reconstruction through the encoder."""

import jax
import jax.numpy as jnp

from vae_jax import distributions


def sample_prior(key: jax.Array, num: int, latent_dim: int) -> jax.Array:
  """z ~ N(0, I): `[num, latent_dim]`."""
  return jax.random.normal(key, (num, latent_dim))


def generate(model, params, key, num: int, *, mean: bool = True) -> jax.Array:
  """Decodes `num` draws z ~ N(0, I).

  Args:
    model, params: the VAE and its parameters.
    key: a `jax.random` key.
    num: how many.
    mean: return E[x|z] (pixel probabilities, or the Gaussian mean) if True,
      else a draw x ~ p(x|z).

  Returns:
    `[num, D]`.
  """
  z_key, x_key = jax.random.split(key)
  z = sample_prior(z_key, num, model.latent_dim)
  return decode(model, params, z, None if mean else x_key)


def decode(model, params, z, key=None) -> jax.Array:
  """E[x|z] when `key` is None, else a draw x ~ p(x|z): `[..., Z]` -> `[..., D]`."""
  if key is None:
    return model.apply(params, z, method=model.mean_output)
  return model.apply(params, z, key, method=model.sample_output)


def reconstruct(model, params, x, key=None) -> jax.Array:
  """E[x|z] with z the encoder mean (`key` None) or a draw z ~ q(z|x).

  Args:
    x: `[batch, D]`.
    key: None for the encoder mean, else a `jax.random` key.

  Returns:
    `[batch, D]`.
  """
  mean, logvar = model.apply(params, x, method=model.encode)
  z = mean if key is None else distributions.gaussian_sample(key, mean, logvar)
  return model.apply(params, z, method=model.mean_output)


def interpolate(model, params, x_a, x_b, num: int) -> jax.Array:
  """Decodes the straight line between the encoder means of x_a and x_b `[D]`: `[num, D]`."""
  mean, _ = model.apply(params, jnp.stack([x_a, x_b]), method=model.encode)
  t = jnp.linspace(0.0, 1.0, num)[:, None]
  return model.apply(params, (1 - t) * mean[0] + t * mean[1], method=model.mean_output)
