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
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax import flows
from vae_jax import labels as labels_lib
from vae_jax.objectives import Parts

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "softplus": nn.softplus,
               "elu": nn.elu, "gelu": nn.gelu}


# Likelihood heads: how many outputs per data entry the decoder gives, and the
# distribution they parameterize over an event of `event_ndims` axes. Frozen dataclasses: hashable, so a model
# holding one stays a static argument.

@dataclasses.dataclass(frozen=True)
class _LogitsHead:
  """A distribution of one parameter per entry, its logits (`distribution`)."""
  params_per_entry = 1
  distribution = None

  def __call__(self, out: jax.Array, event_ndims: int = 1):
    return self.distribution(out[..., 0], event_ndims)  # pylint: disable=not-callable


@dataclasses.dataclass(frozen=True)
class BernoulliHead(_LogitsHead):
  """Bernoulli from logits: binary data (or dynamically binarized grey levels)."""
  distribution = distributions.Bernoulli


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

  def __call__(self, out: jax.Array, event_ndims: int = 1) -> distributions.Gaussian:
    mean = nn.sigmoid(out[..., 0]) if self.squash_mean else out[..., 0]
    logvar = out[..., 1] if self.learned_variance else jnp.asarray(self.fixed_logvar, out.dtype)
    return distributions.Gaussian(mean, logvar, event_ndims)


@dataclasses.dataclass(frozen=True)
class ContinuousBernoulliHead(_LogitsHead):
  """The continuous Bernoulli from logits: grey levels in [0, 1]."""
  distribution = distributions.ContinuousBernoulli


@dataclasses.dataclass(frozen=True)
class DiscretizedLogisticHead:
  """A discretized logistic per entry: 8-bit data; log scale floored at -7 (Salimans et al.)."""
  params_per_entry = 2

  def __call__(self, out: jax.Array, event_ndims: int = 1) -> distributions.DiscretizedLogistic:
    return distributions.DiscretizedLogistic(out[..., 0], jnp.maximum(out[..., 1], -7.0),
                                             event_ndims)


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


def _full_precision(x: jax.Array, dtype) -> jax.Array:
  """A low-precision layer's output back in float32: likelihoods and KLs are summed
  in float32. Without a compute dtype (None) the inputs' precision is kept (float64
  under x64, as the gradient checks use)."""
  return x if dtype is None else x.astype(jnp.promote_types(dtype, jnp.float32))


class MLP(nn.Module):
  """Dense layers with an activation between them (none after the last); the matmuls
  in `dtype` if given (parameters keep theirs), the output back in float32."""
  features: Sequence[int]
  activation: str = "relu"
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    for i, width in enumerate(self.features):
      x = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x)
      if i < len(self.features) - 1:
        x = act(x)
    return _full_precision(x, self.dtype)


def _outputs(latent_dim: int, flow) -> int:
  """What an encoder's last layer gives: the mean and log-variance of q0, and the flow's
  per-example inputs."""
  return 2 * latent_dim + (flow.context_size(latent_dim) if flow else 0)


def _posterior(module: nn.Module, out: jax.Array, latent_dim: int, flow):
  """The posterior of an encoder's last layer `[..., _outputs]`: a DiagonalGaussian, or
  with a flow (`flows.Planar`, `flows.IAF`) a `flows.FlowPosterior` over it whose own
  parameters (IAF's networks) are `module`'s parameter "flow"."""
  base = distributions.DiagonalGaussian(out[..., :latent_dim], out[..., latent_dim:2 * latent_dim])
  if flow is None:
    return base
  params = module.param("flow", flow.init, latent_dim) if flow.has_params else None
  return flows.FlowPosterior(base, out[..., 2 * latent_dim:], params, flow)


class Encoder(nn.Module):
  """q(z|x) = N(mean(x), diag(exp(logvar(x)))) (`flow` None), or that Gaussian through
  `flow`: `[..., input_dim]` -> DiagonalGaussian or FlowPosterior `[..., Z]`; a
  conditional model's one-hot labels `[..., K]` join x at the input."""
  latent_dim: int
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"
  dtype: Any = None
  flow: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, y_hot: jax.Array | None = None):
    # One output layer for every head (one matmul), split after.
    out = MLP(tuple(self.hidden_sizes) + (_outputs(self.latent_dim, self.flow),),
              self.activation, self.dtype, name="mlp")(labels_lib.with_labels(x, y_hot))
    return _posterior(self, out, self.latent_dim, self.flow)


class Decoder(nn.Module):
  """p(x|z): `[..., latent_dim]` -> the likelihood `head` over `[..., *event_shape]` (a
  conditional model gives it z with the one-hot labels appended)."""
  event_shape: Sequence[int]
  hidden_sizes: Sequence[int] = (400,)
  activation: str = "relu"
  head: Any = BernoulliHead()
  dtype: Any = None

  @nn.compact
  def __call__(self, z: jax.Array):
    p = self.head.params_per_entry
    size = math.prod(self.event_shape)
    out = MLP(tuple(self.hidden_sizes) + (size * p,), self.activation, self.dtype,
              name="mlp")(z)
    # Entry-major: the p parameters of one pixel sit together. The likelihood is
    # computed flat and seen as images (`distributions.Reshaped`): much faster on a CPU.
    flat = self.head(out.reshape(out.shape[:-1] + (size, p)), 1)
    if len(self.event_shape) == 1:
      return flat
    return distributions.Reshaped(flat, tuple(self.event_shape))


def flatten_event(x: jax.Array, event_shape: Sequence[int]) -> jax.Array:
  """`[..., *event_shape]` -> `[..., prod(event_shape)]`: images into an MLP."""
  n = len(event_shape)
  return x.reshape(x.shape[:x.ndim - n] + (math.prod(event_shape),))


class _OneLatentVAE(nn.Module):
  """What the one-latent VAEs share: `decode`, the prior (N(0, I) over `latent_dim`, or
  the VampPrior of `pseudo_inputs` learned inputs) and `parts`; a subclass gives
  `encoder`, `decoder`, `encode` and calls `_setup_prior` in its `setup`."""

  def _setup_prior(self):
    if self.pseudo_inputs:
      # Logits of the pseudo-inputs (a sigmoid keeps them in the data's [0, 1]), started
      # near MNIST's mean grey level with some spread so the components differ.
      init = lambda key, shape: jax.random.normal(key, shape) - 2.0
      self.pseudo_input_logits = self.param(
          "pseudo_inputs", init, (self.pseudo_inputs,) + tuple(self.event_shape))

  def __call__(self, x: jax.Array):
    """Encodes and decodes the encoder mean: used by `init` to create every parameter."""
    y_hot = (jnp.zeros(x.shape[:1] + (self.num_classes,), x.dtype) if self.num_classes
             else None)
    return self.decode(self.encode(x, y_hot).mean, y_hot).mean

  def decode(self, z: jax.Array, y_hot: jax.Array | None = None):
    """`[..., Z]` (and a conditional model's one-hot labels `[..., K]`) -> p(x|z) over
    `[..., *event_shape]`."""
    return self.decoder(labels_lib.with_labels(z, y_hot))

  def prior(self):
    """N(0, I), or the VampPrior: the uniform mixture of q0(z|u_k) over the K learned
    pseudo-inputs u_k (Tomczak & Welling, 2018; q0 is the Gaussian before any flow)."""
    if not self.pseudo_inputs:
      return distributions.StandardNormal(self.latent_dim)
    return distributions.vamp_prior(self.encode, jax.nn.sigmoid(self.pseudo_input_logits))

  @nn.nowrap
  def parts(self, params, labels: jax.Array | None = None) -> Parts:
    """(encoder, decoder, prior) with `params` bound: what the objectives take; a
    conditional model (`num_classes` > 0) binds the labels `[batch]` of the rows it
    will see too, so the bounds are on log p(x|y).

    Works under `jax.grad` and `jax.jit` (the binding happens on traced params).
    """
    bound = self.bind(params)
    if (labels is None) != (not self.num_classes):
      raise ValueError(f"parts: a model of num_classes={self.num_classes} takes "
                       f"{'labels' if self.num_classes else 'no labels'}")
    if labels is None:
      return Parts(bound.encode, bound.decode, bound.prior())
    y_hot = jax.nn.one_hot(labels, self.num_classes)  # [batch, K], broadcast over z's samples
    return Parts(lambda x: bound.encode(x, y_hot), lambda z: bound.decode(z, y_hot),
                 bound.prior())


class VAE(_OneLatentVAE):
  """A VAE with an MLP diagonal-Gaussian encoder, an MLP decoder (hidden sizes
  mirrored) and the prior N(0, I).

  Attributes:
    input_dim: D, the size of a flattened data point (used when `image_shape`
      is None: data `[batch, D]`).
    latent_dim: Z.
    hidden_sizes: the encoder's hidden widths; the decoder uses them reversed.
    activation: a key of `ACTIVATIONS` ("relu" as in the PyTorch example,
      "tanh" as in Kingma & Welling).
    likelihood: a likelihood head (`LIKELIHOODS`), default Bernoulli logits.
    image_shape: (H, W, C) to take images `[batch, H, W, C]`: flattened inside
      the encoder, the likelihood over `[batch, H, W, C]`. Same parameters as
      `input_dim = H * W * C`.
    dtype: the matmuls' dtype (`jnp.bfloat16` for mixed precision on an
      accelerator; None: the inputs' and parameters' own); parameters,
      likelihoods and KLs stay float32.
    flow: None (a diagonal-Gaussian posterior) or a flow over it
      (`flows.Planar(steps)`, `flows.IAF(steps, ...)`).
    pseudo_inputs: 0 (the prior N(0, I)) or K, the VampPrior's learned inputs.
    num_classes: 0, or K for a conditional VAE: the one-hot label joins x at the
      encoder's input and z at the decoder's (`parts(params, labels)`).

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
  image_shape: Sequence[int] | None = None
  dtype: Any = None
  flow: Any = None
  pseudo_inputs: int = 0
  num_classes: int = 0

  @property
  def event_shape(self) -> tuple[int, ...]:
    """The shape of one data point."""
    return tuple(self.image_shape) if self.image_shape else (self.input_dim,)

  def setup(self):
    _check_activation(self.activation)
    self.encoder = Encoder(self.latent_dim, tuple(self.hidden_sizes), self.activation,
                           self.dtype, self.flow)
    self._setup_prior()
    self.decoder = Decoder(self.event_shape, tuple(self.hidden_sizes)[::-1], self.activation,
                           self.likelihood, self.dtype)

  def encode(self, x: jax.Array, y_hot: jax.Array | None = None):
    """`[..., *event_shape]` (and a conditional model's one-hot labels `[..., K]`) ->
    q(z|x) over `[..., Z]`."""
    return self.encoder(flatten_event(x, self.event_shape), y_hot)


def _check_activation(name: str) -> None:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation={name!r}: expected one of {sorted(ACTIVATIONS)}")


def _leading(x: jax.Array, event_ndims: int):
  """`[..., *event]` -> (`[n, *event]`, the leading shape): convs take one batch axis."""
  lead = x.shape[:x.ndim - event_ndims]
  return x.reshape((-1,) + x.shape[x.ndim - event_ndims:]), lead


class ConvEncoder(nn.Module):
  """q(z|x) from images: strided 4x4 convs (each halves H and W), a dense layer (a
  conditional model's one-hot labels `[..., K]` join its input), then the mean and
  log-variance. `[..., H, W, C]` -> DiagonalGaussian `[..., Z]`."""
  latent_dim: int
  channels: Sequence[int] = (32, 64)
  hidden: int = 256
  dtype: Any = None
  flow: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, y_hot: jax.Array | None = None):
    h, lead = _leading(x, 3)
    for i, c in enumerate(self.channels):
      h = nn.relu(nn.Conv(c, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                          name=f"conv_{i}")(h))
    # The labels join the conv features, before the dense layer.
    h = labels_lib.with_labels(h.reshape(lead + (-1,)), y_hot)
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense")(h.reshape(-1, h.shape[-1])))
    size = _outputs(self.latent_dim, self.flow)
    out = nn.Dense(size, dtype=self.dtype, name="out")(h)
    out = _full_precision(out, self.dtype).reshape(lead + (size,))
    return _posterior(self, out, self.latent_dim, self.flow)


class ConvDecoder(nn.Module):
  """p(x|z) as images: dense layers to a `[H / 2^n, W / 2^n, channels[-1]]` map, then
  stride-2 transposed convs back up; the last gives the head's parameters.
  `[..., Z]` -> the likelihood over `[..., H, W, C]`."""
  image_shape: Sequence[int]
  channels: Sequence[int] = (32, 64)
  hidden: int = 256
  head: Any = BernoulliHead()
  dtype: Any = None

  @nn.compact
  def __call__(self, z: jax.Array):
    height, width, c_out = self.image_shape
    f = 2 ** len(self.channels)
    h, lead = _leading(z, 1)
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense")(h))
    h = nn.relu(nn.Dense(height // f * width // f * self.channels[-1], dtype=self.dtype,
                         name="project")(h))
    h = h.reshape(-1, height // f, width // f, self.channels[-1])
    for i, c in enumerate(tuple(self.channels[:-1])[::-1]):
      h = nn.relu(nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                                   name=f"deconv_{i}")(h))
    p = self.head.params_per_entry
    h = nn.ConvTranspose(c_out * p, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                         name="out")(h)
    h = _full_precision(h, self.dtype)
    return self.head(h.reshape(lead + (height, width, c_out, p)), 3)


class ConvVAE(_OneLatentVAE):
  """A convolutional VAE for `[batch, H, W, C]` images, H and W divisible by
  2^len(channels); prior N(0, I).

  Attributes:
    image_shape: (H, W, C), e.g. (28, 28, 1) or (32, 32, 3).
    latent_dim: Z.
    channels: conv widths going down (reversed going up); each layer halves H and W.
    hidden: the dense layer between the convs and z, each side.
    likelihood: a likelihood head.
    flow, pseudo_inputs, num_classes: as for `VAE`.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  latent_dim: int = 20
  channels: Sequence[int] = (32, 64)
  hidden: int = 256
  likelihood: Any = BernoulliHead()
  dtype: Any = None
  flow: Any = None
  pseudo_inputs: int = 0
  num_classes: int = 0

  @property
  def event_shape(self) -> tuple[int, ...]:
    return tuple(self.image_shape)

  def setup(self):
    f = 2 ** len(self.channels)
    if len(self.image_shape) != 3 or self.image_shape[0] % f or self.image_shape[1] % f:
      raise ValueError(f"image_shape={tuple(self.image_shape)}: the conv model needs "
                       f"(H, W, C) with H and W divisible by {f}; resize the images "
                       f"(e.g. image_size=32) or use the MLP model")
    self.encoder = ConvEncoder(self.latent_dim, tuple(self.channels), self.hidden, self.dtype,
                               self.flow)
    self.decoder = ConvDecoder(tuple(self.image_shape), tuple(self.channels), self.hidden,
                               self.likelihood, self.dtype)
    self._setup_prior()

  def encode(self, x: jax.Array, y_hot: jax.Array | None = None):
    """`[..., H, W, C]` (and one-hot labels `[..., K]`) -> q(z|x) over `[..., Z]`."""
    return self.encoder(x, y_hot)


class TwoLayerVAE(nn.Module):
  """Two stochastic layers (Burda et al., 2016, section 5): z = [z1, z2].

  Inference: x -> MLP(hidden_sizes[0]) -> q(z1|x); z1 -> MLP(hidden_sizes[1]) -> q(z2|z1).
  Generation, mirrored: p(z2) = N(0, I); z2 -> MLP(hidden_sizes[1] reversed) -> p(z1|z2);
  z1 -> MLP(hidden_sizes[0] reversed) -> p(x|z1). Every conditional a diagonal Gaussian
  (the likelihood excepted). The posterior and prior are `TwoLevelGaussian`s over the
  joint z, so the ELBO (estimator "monte_carlo": there is no closed-form KL) and the
  IWAE bound treat (z1, z2) jointly, and generation draws from the top.

  Attributes:
    input_dim, image_shape, likelihood, activation: as for `VAE`.
    latent_dims: (dim z1, dim z2); Burda et al.: (100, 50).
    hidden_sizes: (widths between x and z1, widths between z1 and z2); Burda et
      al.: ((200, 200), (100, 100)), tanh.
  """
  input_dim: int = 784
  latent_dims: Sequence[int] = (100, 50)
  hidden_sizes: Sequence[Sequence[int]] = ((200, 200), (100, 100))
  activation: str = "tanh"
  likelihood: Any = BernoulliHead()
  image_shape: Sequence[int] | None = None
  dtype: Any = None

  @property
  def latent_dim(self) -> int:
    """The size of the joint z = [z1, z2]."""
    return sum(self.latent_dims)

  event_shape = VAE.event_shape  # the same data: flat vectors, or images flattened inside

  @nn.nowrap
  def _conditionals(self, **parent):
    """q(z1|x), q(z2|z1), p(z1|z2); with parent=None, unbound copies to `apply`."""
    (d1, d2), (h1, h2) = self.latent_dims, self.hidden_sizes
    act, dt = self.activation, self.dtype
    return (Encoder(d1, tuple(h1), act, dt, **parent), Encoder(d2, tuple(h2), act, dt, **parent),
            Encoder(d1, tuple(h2)[::-1], act, dt, **parent))

  def setup(self):
    _check_activation(self.activation)
    self.q_z1, self.q_z2, self.p_z1 = self._conditionals()
    self.decoder = Decoder(self.event_shape, tuple(self.hidden_sizes[0])[::-1],
                           self.activation, self.likelihood, self.dtype)

  def __call__(self, x: jax.Array):
    """Runs every network once: used by `init` to create every parameter."""
    z1 = self.q_z1(flatten_event(x, self.event_shape)).mean
    z2 = self.q_z2(z1).mean
    return self.decoder(self.p_z1(z2).mean).mean

  def encode(self, x: jax.Array) -> distributions.TwoLevelGaussian:
    """`[..., *event_shape]` -> q(z1|x) q(z2|z1) over `[..., d1 + d2]`."""
    return distributions.TwoLevelGaussian(
        self.q_z1(flatten_event(x, self.event_shape)), self.q_z2.variables,
        self._conditionals(parent=None)[1], self.latent_dims[0])

  def decode(self, z: jax.Array):
    """`[..., d1 + d2]` (or `[..., d1]`) -> p(x|z1) over `[..., *event_shape]`."""
    return self.decoder(z[..., :self.latent_dims[0]])

  def prior(self) -> distributions.TwoLevelGaussian:
    """p(z2) p(z1|z2) over z = [z1, z2]."""
    return distributions.TwoLevelGaussian(
        distributions.StandardNormal(self.latent_dims[1]), self.p_z1.variables,
        self._conditionals(parent=None)[2], self.latent_dims[1], first_last=True)

  @nn.nowrap
  def parts(self, params, labels=None) -> Parts:
    if labels is not None:
      raise ValueError("parts: the two-layer model is not conditional; it takes no labels")
    bound = self.bind(params)
    return Parts(bound.encode, bound.decode, bound.prior())


def init_params(model, key: jax.Array):
  """Initial parameters of `model` (any of this module's VAEs), a pytree of float32 arrays.

  Compiled (the same numbers as eager initialization, bit for bit, in a fraction of
  the time: eager dispatch compiles every operation on its own)."""
  return _init(model, key)


@functools.partial(jax.jit, static_argnums=0)
def _init(model, key):
  return model.init(key, jnp.zeros((1,) + tuple(model.event_shape), jnp.float32))


@dataclasses.dataclass(frozen=True)
class LinenModel:
  """One of this module's linen VAEs as the runner's `config.Model`."""
  module: nn.Module

  def init(self, key: jax.Array):
    return init_params(self.module, key)

  def parts(self, params, labels=None) -> Parts:
    return self.module.parts(params, labels)
