"""Distributions as small pure objects (pytrees), and the log-densities under them.

Posteriors and priors over z, and likelihoods p(x|z), are `flax.struct`
dataclasses: pytrees of arrays that pass through `jax.jit`, `jax.vmap` and
`jax.grad`, with static configuration (event sizes) kept out of the leaves.
Each has `log_prob` (summed over the event, one value per batch entry),
`sample(key)` and a `mean` (a property); posteriors sample with the reparameterization
trick, so gradients flow through the draw.

Event conventions: a latent z is a vector, its last axis the event. A
likelihood's event is its last `event_ndims` axes (1 for flat `[batch, D]`
data, 3 for `[batch, H, W, C]` images); every leading axis is a batch axis.

Write your own (a learned prior, a flow posterior) with the same methods:
`log_prob(z) -> [...]` and `sample(key, sample_shape=()) -> z` (a posterior whose
density is cheap only at its own draws adds `sample_and_log_prob(key)`, as
`flows.FlowPosterior` does, and the objectives use it); give
`kl_divergence` nothing and the analytic estimator will say it has no closed
form, while `estimator="monte_carlo"` works with any pair.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

_LOG_2PI = math.log(2.0 * math.pi)


# -- log-densities as functions: `[..., dim]` -> `[...]` --------------------------------

def gaussian_sample(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Reparameterized draw mean + exp(logvar / 2) * eps, eps ~ N(0, I): `[..., dim]`."""
  eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
  return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(x; mean, diag(exp(logvar))), summed over the last axis: `[..., dim]` -> `[...]`."""
  sq = jnp.square(x - mean) * jnp.exp(-logvar)
  return -0.5 * jnp.sum(_LOG_2PI + logvar + sq, axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """log N(z; 0, I), summed over the last axis: `[..., dim]` -> `[...]`."""
  return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)


def kl_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, diag(exp(logvar))) || N(0, I)) = 1/2 sum (exp(logvar) + mean^2 - 1 - logvar).

  Kingma & Welling (2014), Appendix B. `[..., dim]` -> `[...]`, zero exactly
  when mean = 0 and logvar = 0.
  """
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log Bernoulli(x; sigmoid(logits)) = x * l - softplus(l), summed over the last axis.

  Never the log of a sigmoid: finite, with gradient x - sigmoid(l), for every
  float32 logit (a sigmoid-then-log BCE is NaN near l = 105). For grey levels
  in (0, 1) it is the cross-entropy of the PyTorch example, not a normalized
  likelihood (see `ContinuousBernoulli`).
  """
  return jnp.sum(x * logits - softplus(logits), axis=-1)


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
  """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): exact for every float32 x.

  Same values as `jax.nn.softplus`, whose `logaddexp` lowering runs about ten
  times slower on XLA's CPU backend; this is the inner loop of every
  Bernoulli likelihood.
  """
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  # The kinks of max and abs at 0 would give autodiff a wrong slope there.
  (x,), (t,) = primals, tangents
  return softplus(x), jax.nn.sigmoid(x) * t


def bernoulli_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
  """A draw from Bernoulli(sigmoid(logits)) as floats in {0, 1}, same shape."""
  return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(logits.dtype)


def _sum_event(values: jax.Array, event_ndims: int) -> jax.Array:
  return jnp.sum(values, axis=tuple(range(-event_ndims, 0))) if event_ndims else values


# -- posteriors and priors over z --------------------------------------------------------

def sample_and_log_prob(q, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A reparameterized z ~ q `[..., dim]` and log q(z) `[...]`: q's own
  `sample_and_log_prob` when it has one (a flow carries its density with its samples),
  else `sample` then `log_prob`."""
  if hasattr(q, "sample_and_log_prob"):
    return q.sample_and_log_prob(key)
  z = q.sample(key)
  return z, q.log_prob(z)


def log_prob_of_draw(q, z: jax.Array, key: jax.Array) -> jax.Array:
  """log q(z) `[...]` at z = `q.sample(key)` `[..., dim]` (or the draw of a q with the same
  parameter values, such as its `stop_gradient` copy), differentiable in z and in q's
  parameters as `q.log_prob` is: q's own `log_prob_of_draw` when it has one (a flow's
  is exact where its inverse loses digits), else `log_prob(z)`."""
  if hasattr(q, "log_prob_of_draw"):
    return q.log_prob_of_draw(z, key)
  return q.log_prob(z)


@struct.dataclass
class DiagonalGaussian:
  """N(mean, diag(exp(logvar))) over vectors z; mean and logvar `[..., dim]`."""
  mean: jax.Array
  logvar: jax.Array

  def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    """Reparameterized: `sample_shape + [..., dim]`, differentiable in mean and logvar."""
    eps = jax.random.normal(key, tuple(sample_shape) + jnp.shape(self.mean),
                            jnp.result_type(self.mean))
    return self.mean + jnp.exp(0.5 * self.logvar) * eps

  def log_prob(self, z: jax.Array) -> jax.Array:
    """`[..., dim]` -> `[...]`."""
    return gaussian_log_prob(z, self.mean, self.logvar)


@struct.dataclass
class StandardNormal:
  """N(0, I) over vectors of `dim` entries (the default prior).

  `dim` is only needed to sample; `log_prob` takes any `[..., dim]`.
  """
  dim: int | None = struct.field(pytree_node=False, default=None)

  def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    if self.dim is None:
      raise ValueError("StandardNormal() without dim cannot sample; use StandardNormal(dim)")
    return jax.random.normal(key, tuple(sample_shape) + (self.dim,))

  def log_prob(self, z: jax.Array) -> jax.Array:
    return standard_normal_log_prob(z)


EXACT_COMPONENTS = 8


@struct.dataclass
class MixtureOfGaussians:
  """A mixture of diagonal Gaussians over z: a learnable prior (e.g. the VampPrior's shape).

  logits `[K]`, means and logvars `[K, dim]`. Sampling is not reparameterized
  through the component choice (a prior needs no gradient through its draws).
  """
  logits: jax.Array
  means: jax.Array
  logvars: jax.Array

  def log_prob(self, z: jax.Array) -> jax.Array:
    """`[..., dim]` -> `[...]`.

    Every component's log-density comes from two matmuls (sum_d of (z - m)^2 / v
    expanded), which on a CPU is about ten times faster than the `[..., K, dim]`
    differences for K = 500; the expansion cancels digits when z sits near a
    component, so the `EXACT_COMPONENTS` largest are computed again directly, and
    those dominate the sum.
    """
    precision = jnp.exp(-self.logvars)  # [K, dim]
    const = -0.5 * jnp.sum(_LOG_2PI + self.logvars + jnp.square(self.means) * precision, -1)
    approx = const - 0.5 * (jnp.square(z) @ precision.T) + z @ (self.means * precision).T
    log_w = jax.nn.log_softmax(self.logits)
    n = min(EXACT_COMPONENTS, self.logits.shape[-1])
    _, top = jax.lax.top_k(jax.lax.stop_gradient(approx + log_w), n)  # [..., n]
    exact = gaussian_log_prob(z[..., None, :], self.means[top], self.logvars[top])
    if n == self.logits.shape[-1]:  # every component computed directly
      return jax.nn.logsumexp(exact + log_w[top], -1)
    rest = jnp.where(jnp.any(jnp.arange(self.logits.shape[-1]) == top[..., None], -2),
                     -jnp.inf, approx + log_w)
    return jnp.logaddexp(jax.nn.logsumexp(exact + log_w[top], -1),
                         jax.nn.logsumexp(rest, -1))

  def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    k_comp, k_z = jax.random.split(key)
    comp = jax.random.categorical(k_comp, self.logits, shape=tuple(sample_shape))
    return gaussian_sample(k_z, self.means[comp], self.logvars[comp])


def vamp_prior(encoder, pseudo_inputs: jax.Array) -> MixtureOfGaussians:
  """The VampPrior (Tomczak & Welling, 2018): p(z) = 1/K sum_k q(z|u_k), the uniform
  mixture of the encoder's posteriors of K pseudo-inputs u_k `[K, ...]` (learned like
  any parameter: gradients reach them through this prior). A flow posterior contributes
  its Gaussian q0 (a flow's density has no closed form to mix)."""
  q = encoder(pseudo_inputs)
  q = getattr(q, "base", q)
  if not (hasattr(q, "mean") and hasattr(q, "logvar")):
    raise TypeError(f"vamp_prior: the encoder gives {type(q).__name__}; the VampPrior mixes "
                    f"diagonal Gaussians (or a flow's Gaussian base)")
  return MixtureOfGaussians(jnp.zeros(q.mean.shape[:-1], q.mean.dtype), q.mean, q.logvar)


@struct.dataclass
class TwoLevelGaussian:
  """p(a) p(b | a) over z = concat([a, b]) (or [b, a]): two stochastic layers as one z.

  Burda et al.'s (2016) two-layer model uses it twice: the posterior
  q(z1|x) q(z2|z1) (a = z1, stored first) and the prior p(z2) p(z1|z2)
  (a = z2, stored last, so both lay z out as [z1, z2]). The conditional is a
  network: `conditional.apply(params, a)` gives a `DiagonalGaussian` over b.
  Its parameters are a leaf of this pytree, so `stop_gradient` over the object
  holds all of q fixed (what the DReG estimator needs).

  Attributes:
    first: the distribution of a (`DiagonalGaussian` or `StandardNormal`), `[..., dim_a]`.
    params: the conditional's parameters (a pytree).
    conditional: a linen module (static): `apply(params, a) -> DiagonalGaussian` over b.
    first_dim: dim_a (static).
    first_last: a sits at the end of z (static).
  """
  first: Any
  params: Any
  conditional: Any = struct.field(pytree_node=False)
  first_dim: int = struct.field(pytree_node=False)
  first_last: bool = struct.field(pytree_node=False, default=False)

  def _split(self, z):
    if self.first_last:
      return z[..., -self.first_dim:], z[..., :-self.first_dim]
    return z[..., :self.first_dim], z[..., self.first_dim:]

  def _join(self, a, b):
    return jnp.concatenate([b, a] if self.first_last else [a, b], axis=-1)

  def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    """a ~ first, b ~ p(b|a), both reparameterized: `sample_shape + [..., dim_a + dim_b]`."""
    k_a, k_b = jax.random.split(key)
    a = self.first.sample(k_a, sample_shape)
    return self._join(a, self.conditional.apply(self.params, a).sample(k_b))

  def log_prob(self, z: jax.Array) -> jax.Array:
    """log p(a) + log p(b|a): `[..., dim_a + dim_b]` -> `[...]`."""
    a, b = self._split(z)
    return self.first.log_prob(a) + self.conditional.apply(self.params, a).log_prob(b)

  @property
  def mean(self) -> jax.Array:
    """The mean of a and the mean of b given that mean (not E[b]: a summary for pictures)."""
    a = getattr(self.first, "mean", None)
    a = jnp.zeros(self.first_dim) if a is None else a
    return self._join(a, self.conditional.apply(self.params, a).mean)


_KL_PER_DIM: dict = {}


def register_kl(q_type, p_type):
  """Declares the closed-form KL(q || p) of a pair of types (as TFP's `RegisterKL`):
  decorates fn(q, p) -> the KL of each dimension `[..., D]`, which `kl_divergence`
  sums. Subclasses inherit their parents' entries."""
  def add(fn):
    _KL_PER_DIM[(q_type, p_type)] = fn
    return fn
  return add


def kl_per_dim(q, p) -> jax.Array | None:
  """KL(q || p) of each dimension `[..., D]` for a pair with a registered closed form
  (`register_kl`) that factorizes, else None."""
  for q_type in type(q).__mro__:
    for p_type in type(p).__mro__:
      fn = _KL_PER_DIM.get((q_type, p_type))
      if fn is not None:
        return fn(q, p)
  return None


def kl_divergence(q, p) -> jax.Array:
  """KL(q || p) in closed form, `[...]`, for the pairs `register_kl` declares:
  diagonal Gaussian to N(0, I) and diagonal Gaussian to diagonal Gaussian.

  Raises:
    NotImplementedError: no closed form for this pair (estimate it by Monte
      Carlo: `estimator="monte_carlo"`).
  """
  per_dim = kl_per_dim(q, p)
  if per_dim is None:
    raise NotImplementedError(
        f"no closed-form KL between {type(q).__name__} and {type(p).__name__}; "
        f"use estimator='monte_carlo'")
  return jnp.sum(per_dim, axis=-1)


@register_kl(DiagonalGaussian, StandardNormal)
def _kl_gaussian_standard(q: DiagonalGaussian, p: StandardNormal) -> jax.Array:
  del p
  return 0.5 * (jnp.exp(q.logvar) + jnp.square(q.mean) - 1.0 - q.logvar)


@register_kl(DiagonalGaussian, DiagonalGaussian)
def _kl_gaussian_gaussian(q: DiagonalGaussian, p: DiagonalGaussian) -> jax.Array:
  return 0.5 * (p.logvar - q.logvar - 1.0 + jnp.exp(q.logvar - p.logvar)
                + jnp.square(q.mean - p.mean) * jnp.exp(-p.logvar))


# -- likelihoods p(x|z) ----------------------------------------------------------------

@struct.dataclass
class Reshaped:
  """A likelihood over flat `[..., D]` entries, seen as one over `[..., *event_shape]`
  (D their product): `log_prob` flattens x, `mean` and `sample` give images.

  The MLP decoders compute their likelihood in the flat layout: XLA's CPU backend
  runs the same per-pixel terms over `[..., H, W, 1]` about 6 times slower (the
  k = 5000 evaluation of an image model went from 76 to 13 GFLOP/s).
  """
  flat: Any
  event_shape: tuple[int, ...] = struct.field(pytree_node=False)

  def _unflatten(self, v: jax.Array) -> jax.Array:
    return v.reshape(v.shape[:-1] + tuple(self.event_shape))

  def log_prob(self, x: jax.Array) -> jax.Array:
    return self.flat.log_prob(x.reshape(x.shape[:x.ndim - len(self.event_shape)] + (-1,)))

  @property
  def mean(self) -> jax.Array:
    return self._unflatten(self.flat.mean)

  def sample(self, key: jax.Array) -> jax.Array:
    return self._unflatten(self.flat.sample(key))


@struct.dataclass
class Bernoulli:
  """Bernoulli(sigmoid(logits)) per entry, exact for any float32 logit."""
  logits: jax.Array
  event_ndims: int = struct.field(pytree_node=False, default=1)

  def log_prob(self, x: jax.Array) -> jax.Array:
    return _sum_event(x * self.logits - softplus(self.logits), self.event_ndims)

  @property
  def mean(self) -> jax.Array:
    return jax.nn.sigmoid(self.logits)

  def sample(self, key: jax.Array) -> jax.Array:
    return bernoulli_sample(key, self.logits)


@struct.dataclass
class Gaussian:
  """N(mean, exp(logvar)) per entry; logvar may be a scalar (a fixed variance)."""
  loc: jax.Array
  logvar: jax.Array
  event_ndims: int = struct.field(pytree_node=False, default=1)

  def log_prob(self, x: jax.Array) -> jax.Array:
    sq = jnp.square(x - self.loc) * jnp.exp(-self.logvar)
    return _sum_event(-0.5 * (_LOG_2PI + self.logvar + sq), self.event_ndims)

  @property
  def mean(self) -> jax.Array:
    return self.loc

  def sample(self, key: jax.Array) -> jax.Array:
    return gaussian_sample(key, self.loc, jnp.broadcast_to(self.logvar, jnp.shape(self.loc)))


def _log_cb_normalizer(logits: jax.Array) -> jax.Array:
  """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(l).

  C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2) = 2 u / tanh(u)
  with u = l / 2, so log C = log 2 + log(u / tanh u): no division by 1 - 2
  lambda. Near u = 0 the series log cosh u - log(sinh(u) / u) = u^2/3 - 7u^4/90
  + 62u^6/2835 - 127u^8/18900 + 146u^10/66825 replaces the 0/0 (its first
  omitted term is below 1e-15 for |u| < 0.1, so float64 is exact there too);
  `where` on a safe input keeps the gradient finite.
  """
  u = 0.5 * logits
  small = jnp.abs(u) < 0.1
  safe = jnp.where(small, 1.0, u)
  direct = jnp.log(jnp.abs(safe)) - jnp.log(jnp.abs(jnp.tanh(safe)))
  u2 = jnp.square(u)
  series = u2 * (1 / 3 + u2 * (-7 / 90 + u2 * (62 / 2835 + u2 * (-127 / 18900
                                                         + u2 * 146 / 66825))))
  return math.log(2.0) + jnp.where(small, series, direct)


@struct.dataclass
class ContinuousBernoulli:
  """The continuous Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham, 2019).

  p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x), lambda = sigmoid(logits):
  the normalized density for grey levels that the Bernoulli cross-entropy is
  not. Stable at lambda = 1/2 (logits = 0), value and gradient.
  """
  logits: jax.Array
  event_ndims: int = struct.field(pytree_node=False, default=1)

  def log_prob(self, x: jax.Array) -> jax.Array:
    per_entry = x * self.logits - softplus(self.logits) + _log_cb_normalizer(self.logits)
    return _sum_event(per_entry, self.event_ndims)

  @property
  def mean(self) -> jax.Array:
    """E[x] = 1 / (1 - exp(-l)) - 1 / l, and 1/2 + l/12 - l^3/720 near l = 0."""
    l = self.logits
    small = jnp.abs(l) < 0.05
    safe = jnp.where(small, 1.0, l)
    return jnp.where(small, 0.5 + l / 12.0 - l ** 3 / 720.0,
                     1.0 / (-jnp.expm1(-safe)) - 1.0 / safe)

  def sample(self, key: jax.Array) -> jax.Array:
    """Inverse CDF: x = log1p(u expm1(l)) / l, written to stay finite for any l."""
    l = self.logits
    u = jax.random.uniform(key, jnp.shape(l), jnp.result_type(l))
    small = jnp.abs(l) < 1e-4
    safe = jnp.where(small, 1.0, l)
    pos = 1.0 + jnp.log(u + (1.0 - u) * jnp.exp(-jnp.abs(safe))) / jnp.abs(safe)
    neg = jnp.log1p(u * jnp.expm1(-jnp.abs(safe))) / (-jnp.abs(safe))
    return jnp.where(small, u, jnp.where(l > 0, pos, neg))


@struct.dataclass
class DiscretizedLogistic:
  """A logistic discretized into 256 bins on [0, 1] (8-bit data: x = k / 255).

  Kingma et al. (2016), Salimans et al. (2017). Bin k has mass
  sigmoid(a) - sigmoid(b), a and b its upper and lower edges standardized,
  a = (k/255 + 1/510 - loc) / s, b = a - 1/(255 s); the edge bins take the tails.
  The interior bins use the exact identity
  sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-1/(255 s))),
  log P = -softplus(-a) - softplus(b) + log(-expm1(-1/(255 s))),
  which subtracts no two nearly equal numbers at any loc or scale (a difference
  of log-sigmoids loses every digit once s is large: 121 of 256 bins were -inf
  at log_scale 11 in float32). `x` must lie in [0, 1] (levels k / 255): an entry
  outside raises ValueError when `x` is concrete and gives NaN under `jit`, so
  levels 0..255 passed by mistake never land silently in the top bin.
  `bits_per_dim` turns a log-likelihood into the figure papers quote.
  """
  loc: jax.Array
  log_scale: jax.Array
  event_ndims: int = struct.field(pytree_node=False, default=1)

  def log_prob(self, x: jax.Array) -> jax.Array:
    if not isinstance(x, jax.core.Tracer):
      # numpy's min: jnp's would be staged (and fail) when x is a constant under jit.
      lo, hi = float(np.min(np.asarray(x))), float(np.max(np.asarray(x)))
      if lo < 0.0 or hi > 1.0:
        raise ValueError(f"DiscretizedLogistic.log_prob: x spans [{lo:g}, {hi:g}]; it takes "
                         f"levels k / 255 in [0, 1] (divide 8-bit levels by 255)")
    inv_s = jnp.exp(-self.log_scale)
    # Bin edges from the bin index, so neighbouring bins share the very same
    # float edge and the masses telescope to 1 even for tiny scales.
    k = jnp.round(x * 255.0)
    a = ((k + 0.5) / 255.0 - self.loc) * inv_s
    b = ((k - 0.5) / 255.0 - self.loc) * inv_s
    log_width = jnp.log(-jnp.expm1(-inv_s / 255.0))  # log(1 - exp(-(a - b))), exactly
    interior = -softplus(-a) - softplus(b) + log_width
    lower = -softplus(-a)  # log sigmoid(a): bin 0 takes everything below
    upper = -softplus(b)  # log(1 - sigmoid(b)): bin 255 takes everything above
    per_entry = jnp.where(k < 0.5, lower, jnp.where(k > 254.5, upper, interior))
    per_entry = jnp.where((x >= 0.0) & (x <= 1.0), per_entry, jnp.nan)
    return _sum_event(per_entry, self.event_ndims)

  @property
  def mean(self) -> jax.Array:
    """E[x] = 1/255 sum_{k=1..255} P(x >= k / 255), exactly."""
    thresholds = (jnp.arange(1, 256) - 0.5) / 255.0
    z = (thresholds - self.loc[..., None]) * jnp.exp(-self.log_scale)[..., None]
    return jnp.mean(jax.nn.sigmoid(-z), axis=-1)

  def sample(self, key: jax.Array) -> jax.Array:
    u = jax.random.uniform(key, jnp.shape(self.loc), minval=1e-6, maxval=1.0 - 1e-6)
    y = self.loc + jnp.exp(self.log_scale) * (jnp.log(u) - jnp.log1p(-u))
    return jnp.clip(jnp.round(y * 255.0), 0, 255) / 255.0


def bits_per_dim(log_likelihood: jax.Array, num_dims: int) -> jax.Array:
  """-log p(x) / (D log 2): nats per example to bits per dimension."""
  return -log_likelihood / (num_dims * math.log(2.0))
