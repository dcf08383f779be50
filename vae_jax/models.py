"""Encoder q(z|x) and decoder p(x|z) as Flax linen MLPs, and named presets.

Linen, not NNX: a linen module is a frozen, hashable description and its
parameters are a plain pytree, so `elbo(model, params, x, key)` stays a pure
function that `jax.jit`, `jax.vmap` and `jax.grad` take as it is, the model a
static argument, and orbax saves the parameters with no module state attached.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "softplus": nn.softplus,
               "elu": nn.elu, "gelu": nn.gelu}
LIKELIHOODS = ("bernoulli", "gaussian")


def _check(activation: str, likelihood: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation={activation!r}: expected one of {sorted(ACTIVATIONS)}")
  if likelihood not in LIKELIHOODS:
    raise ValueError(f"likelihood={likelihood!r}: expected one of {list(LIKELIHOODS)}")


class MLP(nn.Module):
  """Dense layers with an activation between them (none after the last)."""
  features: Sequence[int]
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      if i < len(self.features) - 1:
        x = act(x)
    return x


class Encoder(nn.Module):
  """q(z|x) = N(mean(x), diag(exp(logvar(x)))): `[..., input_dim]` -> 2 x `[..., latent_dim]`."""
  latent_dim: int
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    # One output layer for both heads (one matmul), split after.
    out = MLP(tuple(self.hidden_sizes) + (2 * self.latent_dim,), self.activation, name="mlp")(x)
    mean, logvar = jnp.split(out, 2, axis=-1)
    return mean, logvar


class Decoder(nn.Module):
  """p(x|z): `[..., latent_dim]` -> Bernoulli logits `[..., output_dim]`, or a
  Gaussian (mean, logvar) pair of `[..., output_dim]` each."""
  output_dim: int
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"
  likelihood: str = "bernoulli"
  bounded_mean: bool = True  # Gaussian mean through a sigmoid, for data in [0, 1].

  @nn.compact
  def __call__(self, z: jax.Array):
    width = self.output_dim * (2 if self.likelihood == "gaussian" else 1)
    out = MLP(tuple(self.hidden_sizes) + (width,), self.activation, name="mlp")(z)
    if self.likelihood == "bernoulli":
      return out
    mean, logvar = jnp.split(out, 2, axis=-1)
    return (nn.sigmoid(mean) if self.bounded_mean else mean), logvar


class VAE(nn.Module):
  """A VAE with a diagonal-Gaussian encoder and an MLP decoder.

  The decoder mirrors the encoder's hidden sizes. Call through `model.apply`
  with `method=`: `encode`, `decode`, `log_likelihood`, `mean_output`.

  Attributes:
    input_dim: D, the size of a flattened data point.
    latent_dim: Z.
    hidden_sizes: the encoder's hidden widths; the decoder uses them reversed.
    activation: a key of `ACTIVATIONS` ("relu" as in the PyTorch example,
      "tanh" as in Kingma & Welling).
    likelihood: "bernoulli" (logits) or "gaussian" (mean and learned logvar).
  """
  input_dim: int = 784
  latent_dim: int = 20
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"
  likelihood: str = "bernoulli"

  def setup(self):
    _check(self.activation, self.likelihood)
    self.encoder = Encoder(self.latent_dim, tuple(self.hidden_sizes), self.activation)
    self.decoder = Decoder(self.input_dim, tuple(self.hidden_sizes)[::-1],
                           self.activation, self.likelihood)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Encodes and decodes the encoder mean: used by `init` to create every parameter."""
    mean, _ = self.encode(x)
    return self.mean_output(mean)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[..., D]` -> (mean, logvar), each `[..., Z]`."""
    return self.encoder(x)

  def decode(self, z: jax.Array):
    """`[..., Z]` -> logits `[..., D]` (bernoulli) or (mean, logvar) `[..., D]` (gaussian)."""
    return self.decoder(z)

  def log_likelihood(self, x: jax.Array, z: jax.Array) -> jax.Array:
    """log p(x|z): x `[..., D]`, z `[..., Z]` -> `[...]`, in nats."""
    out = self.decode(z)
    if self.likelihood == "bernoulli":
      return distributions.bernoulli_log_prob(x, out)
    return distributions.gaussian_log_prob(x, *out)

  def mean_output(self, z: jax.Array) -> jax.Array:
    """E[x|z]: `[..., Z]` -> `[..., D]`."""
    out = self.decode(z)
    return nn.sigmoid(out) if self.likelihood == "bernoulli" else out[0]

  def sample_output(self, z: jax.Array, key: jax.Array) -> jax.Array:
    """A draw x ~ p(x|z): `[..., Z]` -> `[..., D]`."""
    out = self.decode(z)
    if self.likelihood == "bernoulli":
      return distributions.bernoulli_sample(key, out)
    return distributions.gaussian_sample(key, *out)


def init_params(model: VAE, key: jax.Array):
  """Initial parameters of `model`, a pytree of float32 arrays."""
  return model.init(key, jnp.zeros((1, model.input_dim), jnp.float32))


# Presets. Each docstring says where the architecture comes from.

def pytorch_example(latent_dim: int = 20) -> VAE:
  """pytorch/examples `vae/main.py`: 784-400-20, relu, Bernoulli decoder."""
  return VAE(input_dim=784, latent_dim=latent_dim, hidden_sizes=(400,), activation="relu")


def kingma_welling_mnist(latent_dim: int = 20) -> VAE:
  """Kingma & Welling (2014), MNIST: one hidden layer of 500 tanh units each side."""
  return VAE(input_dim=784, latent_dim=latent_dim, hidden_sizes=(500,), activation="tanh")


def kingma_welling_frey(latent_dim: int = 10) -> VAE:
  """Kingma & Welling (2014), Frey Face: 200 tanh units, Gaussian decoder, 28x20 images."""
  return VAE(input_dim=560, latent_dim=latent_dim, hidden_sizes=(200,), activation="tanh",
             likelihood="gaussian")


def burda_2016(latent_dim: int = 50) -> VAE:
  """Burda et al. (2016), Table 1, one stochastic layer: 784-200-200-50, tanh."""
  return VAE(input_dim=784, latent_dim=latent_dim, hidden_sizes=(200, 200), activation="tanh")


PRESETS = {"pytorch_example": pytorch_example, "kingma_welling_mnist": kingma_welling_mnist,
           "kingma_welling_frey": kingma_welling_frey, "burda_2016": burda_2016}
