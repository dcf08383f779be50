"""The project's own models: MLP encoder and decoder in Flax linen, and the
likelihood heads that turn decoder outputs into p(x|z).

These are one client of the function-level core (`vae_jax.objectives`): the
objectives take callables, and `VAE.parts(params)` hands them this model's
encoder, decoder and prior. Linen because a linen module is a frozen, hashable
description and its parameters a plain pytree: the model is a static argument
under `jax.jit` and orbax saves the parameters with no module state attached.
Your own model (NNX, a conv net, plain functions) needs none of this: pass its
callables to `elbo` directly.
"""

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax.objectives import Parts

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "softplus": nn.softplus,
               "elu": nn.elu, "gelu": nn.gelu}


# Likelihood heads: how many outputs per data entry the decoder gives, and the
# distribution they parameterize. Frozen dataclasses: hashable, so a model
# holding one stays a static argument.

@dataclasses.dataclass(frozen=True)
class BernoulliHead:
  """Bernoulli from logits: binary data (or dynamically binarized grey levels)."""
  params_per_entry = 1

  def __call__(self, out: jax.Array) -> distributions.Bernoulli:
    return distributions.Bernoulli(out[..., 0])


@dataclasses.dataclass(frozen=True)
class GaussianHead:
  """N(mean, var) per entry: mean unbounded, or through a sigmoid for data in [0, 1]
  (Kingma & Welling's Frey Face decoder); variance learned per entry, or fixed."""
  squash_mean: bool = False
  learned_variance: bool = True
  fixed_logvar: float = 0.0

  @property
  def params_per_entry(self) -> int:
    return 2 if self.learned_variance else 1

  def __call__(self, out: jax.Array) -> distributions.Gaussian:
    mean = nn.sigmoid(out[..., 0]) if self.squash_mean else out[..., 0]
    logvar = out[..., 1] if self.learned_variance else jnp.asarray(self.fixed_logvar, out.dtype)
    return distributions.Gaussian(mean, logvar)


@dataclasses.dataclass(frozen=True)
class ContinuousBernoulliHead:
  """The continuous Bernoulli from logits: grey levels in [0, 1]."""
  params_per_entry = 1

  def __call__(self, out: jax.Array) -> distributions.ContinuousBernoulli:
    return distributions.ContinuousBernoulli(out[..., 0])


@dataclasses.dataclass(frozen=True)
class DiscretizedLogisticHead:
  """A discretized logistic per entry: 8-bit data; log scale floored at -7 (Salimans et al.)."""
  params_per_entry = 2

  def __call__(self, out: jax.Array) -> distributions.DiscretizedLogistic:
    return distributions.DiscretizedLogistic(out[..., 0], jnp.maximum(out[..., 1], -7.0))


LIKELIHOODS = {
    "bernoulli": BernoulliHead(),
    "continuous_bernoulli": ContinuousBernoulliHead(),
    "gaussian": GaussianHead(),
    "gaussian_sigmoid_mean": GaussianHead(squash_mean=True),
    "discretized_logistic": DiscretizedLogisticHead(),
}


def likelihood_head(name: str):
  """The head registered as `name`; ValueError naming the choices otherwise."""
  if name not in LIKELIHOODS:
    raise ValueError(f"likelihood={name!r}: expected one of {sorted(LIKELIHOODS)}")
  return LIKELIHOODS[name]


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
  """q(z|x) = N(mean(x), diag(exp(logvar(x)))): `[..., input_dim]` -> DiagonalGaussian `[..., Z]`."""
  latent_dim: int
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> distributions.DiagonalGaussian:
    # One output layer for both heads (one matmul), split after.
    out = MLP(tuple(self.hidden_sizes) + (2 * self.latent_dim,), self.activation, name="mlp")(x)
    mean, logvar = jnp.split(out, 2, axis=-1)
    return distributions.DiagonalGaussian(mean, logvar)


class Decoder(nn.Module):
  """p(x|z): `[..., latent_dim]` -> the likelihood `head` over `[..., output_dim]`."""
  output_dim: int
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"
  head: Any = BernoulliHead()

  @nn.compact
  def __call__(self, z: jax.Array):
    p = self.head.params_per_entry
    out = MLP(tuple(self.hidden_sizes) + (self.output_dim * p,), self.activation, name="mlp")(z)
    # Entry-major: the p parameters of one pixel sit together.
    return self.head(out.reshape(out.shape[:-1] + (self.output_dim, p)))


class VAE(nn.Module):
  """A VAE with an MLP diagonal-Gaussian encoder, an MLP decoder (hidden sizes
  mirrored) and the prior N(0, I).

  Attributes:
    input_dim: D, the size of a flattened data point.
    latent_dim: Z.
    hidden_sizes: the encoder's hidden widths; the decoder uses them reversed.
    activation: a key of `ACTIVATIONS` ("relu" as in the PyTorch example,
      "tanh" as in Kingma & Welling).
    likelihood: a likelihood head (`LIKELIHOODS`), default Bernoulli logits.

  Example:
    >>> params = init_params(model, key)
    >>> enc, dec, prior = model.parts(params)
    >>> vae_jax.elbo(enc, dec, x, key, prior=prior)
  """
  input_dim: int = 784
  latent_dim: int = 20
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"
  likelihood: Any = BernoulliHead()

  def setup(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation={self.activation!r}: expected one of {sorted(ACTIVATIONS)}")
    self.encoder = Encoder(self.latent_dim, tuple(self.hidden_sizes), self.activation)
    self.decoder = Decoder(self.input_dim, tuple(self.hidden_sizes)[::-1], self.activation,
                           self.likelihood)

  def __call__(self, x: jax.Array):
    """Encodes and decodes the encoder mean: used by `init` to create every parameter."""
    return self.decode(self.encode(x).mean).mean()

  def encode(self, x: jax.Array) -> distributions.DiagonalGaussian:
    """`[..., D]` -> q(z|x) over `[..., Z]`."""
    return self.encoder(x)

  def decode(self, z: jax.Array):
    """`[..., Z]` -> p(x|z) over `[..., D]`."""
    return self.decoder(z)

  @nn.nowrap
  def prior(self) -> distributions.StandardNormal:
    return distributions.StandardNormal(self.latent_dim)

  @nn.nowrap
  def parts(self, params) -> Parts:
    """(encoder, decoder, prior) with `params` bound: what the objectives take.

    Works under `jax.grad` and `jax.jit` (the binding happens on traced params).
    """
    bound = self.bind(params)
    return Parts(bound.encode, bound.decode, self.prior())


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
  """Kingma & Welling (2014), Frey Face: 200 tanh units, Gaussian decoder whose mean
  goes through a sigmoid, learned variance, 28x20 images."""
  return VAE(input_dim=560, latent_dim=latent_dim, hidden_sizes=(200,), activation="tanh",
             likelihood=LIKELIHOODS["gaussian_sigmoid_mean"])


def burda_2016(latent_dim: int = 50) -> VAE:
  """Burda et al. (2016), Table 1, one stochastic layer: 784-200-200-50, tanh."""
  return VAE(input_dim=784, latent_dim=latent_dim, hidden_sizes=(200, 200), activation="tanh")


PRESETS = {"pytorch_example": pytorch_example, "kingma_welling_mnist": kingma_welling_mnist,
           "kingma_welling_frey": kingma_welling_frey, "burda_2016": burda_2016}
