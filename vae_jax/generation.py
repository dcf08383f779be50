"""Generation from the prior and reconstruction through the encoder, for any `Parts`."""

import jax
import jax.numpy as jnp

from vae_jax.objectives import Parts


def generate(parts: Parts, key, num: int, *, mean: bool = True) -> jax.Array:
  """Decodes `num` draws z ~ p(z): `[num, ...]`.

  Args:
    parts: (encoder, decoder, prior); the prior must be able to sample
      (e.g. `StandardNormal(dim)`).
    key: a `jax.random` key.
    num: how many.
    mean: return E[x|z] (pixel probabilities, or the Gaussian mean) if True,
      else a draw x ~ p(x|z).
  """
  z_key, x_key = jax.random.split(key)
  return decode(parts, parts.prior.sample(z_key, (num,)), None if mean else x_key)


def decode(parts: Parts, z, key=None) -> jax.Array:
  """E[x|z] when `key` is None, else a draw x ~ p(x|z): `[..., Z]` -> `[..., *event]`."""
  likelihood = parts.decoder(z)
  return likelihood.mean if key is None else likelihood.sample(key)


def reconstruct(parts: Parts, x, key=None) -> jax.Array:
  """E[x|z] with z the posterior mean (`key` None) or a draw z ~ q(z|x): `[batch, *event]`."""
  posterior = parts.encoder(x)
  z = posterior.mean if key is None else posterior.sample(key)
  return parts.decoder(z).mean


def interpolate(parts: Parts, x_a, x_b, num: int) -> jax.Array:
  """Decodes the straight line between the posterior means of x_a and x_b: `[num, *event]`."""
  mean = parts.encoder(jnp.stack([x_a, x_b])).mean
  t = jnp.linspace(0.0, 1.0, num)[:, None]
  return parts.decoder((1 - t) * mean[0] + t * mean[1]).mean
