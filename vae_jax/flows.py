"""Normalizing-flow posteriors: a diagonal Gaussian q0(z0|x) pushed through T invertible
maps, z = f_T o ... o f_1 (z0), so that

  log q(z|x) = log q0(z0|x) - sum_t log |det df_t / dz_{t-1}|.

`FlowPosterior` is a posterior object like `DiagonalGaussian`: every objective,
estimator and evaluation takes it. Its density is carried with its samples
(`sample_and_log_prob`), since a flow's inverse is slow (IAF: one pass of its
network per dimension), has no closed form (planar) or loses digits (IAF at small
gates). At its own draws `log_prob_of_draw(z, key)` gives the density from the base
draw, exact, with the derivatives of the inverse; `log_prob(z)` at any other z
inverts the flow where it can (IAF) and says so where it cannot (planar).

A flow is a chain of bijector steps (distrax's `Bijector`/`Chain` shape, over plain
pytrees): each step a frozen (hashable) description with `forward_and_log_det`,
`inverse_and_log_det`, `init` (its parameters, or None) and `context_size` (the
per-example inputs it reads from the encoder). Two flows are built from them:
  `Planar`: `PlanarStep`s, f(z) = z + u tanh(w.z + b), with u, w, b given per example
    by the encoder (Rezende & Mohamed, 2015), u constrained so that f is invertible.
  `IAF`: inverse autoregressive flow (Kingma, Salimans et al., 2016): `IAFStep`s, each
    a MADE network of z and the encoder's context h giving m and s, and
    z' = sigma * z + (1 - sigma) * m, sigma = GATE_FLOOR + (1 - GATE_FLOOR) sigmoid(s);
    entry i of m and s sees only z_1..z_{i-1}, so the Jacobian is triangular and
    log det = sum log sigma; a `Reverse` step between them. The floor bounds each of
    the inverse's divisions by sigma (`GATE_FLOOR`).
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from vae_jax import distributions

# IAF's smallest gate. As sigma -> 0, z' -> m and z is lost to float rounding: the
# inverse recovers z_i only to eps |m_i| / sigma_i, and that error reaches the later
# entries' m through the next gates, so it compounds over entries and steps. The floor
# bounds one entry's loss; it cannot bound the compounding, so nothing that must be
# exact uses the inverse at the flow's own draws (`log_prob_of_draw`), and AIS from q,
# which must invert at other z, checks the round trip first (`inverse_error`).
# docs/faults.md has the measured errors.
GATE_FLOOR = 1e-4


@struct.dataclass
class FlowPosterior:
  """q(z|x): `base` q0 `[..., D]` through `flow`, with per-example inputs `context`
  `[..., C]` (planar: u, w, b; IAF: h) and the flow's own parameters `params` (IAF's
  networks; None for planar). `stop_gradient` over the object holds all of q fixed."""
  base: distributions.DiagonalGaussian
  context: jax.Array
  params: Any
  flow: Any = struct.field(pytree_node=False)

  def sample_and_log_prob(self, key: jax.Array, sample_shape: tuple[int, ...] = ()
                          ) -> tuple[jax.Array, jax.Array]:
    """A reparameterized z `sample_shape + [..., D]` and log q(z|x) `sample_shape + [...]`."""
    z0 = self.base.sample(key, sample_shape)
    z, log_det = self.flow.forward_and_log_det(self.params, self.context, z0)
    return z, self.base.log_prob(z0) - log_det

  def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    return self.sample_and_log_prob(key, sample_shape)[0]

  def log_prob(self, z: jax.Array) -> jax.Array:
    """log q(z|x) at any z, by inverting the flow (`[..., D]` -> `[...]`): what AIS from q
    needs. IAF: D passes of each step's network, inexact where gates are small;
    planar: NotImplementedError."""
    z0, inverse_log_det = self.flow.inverse_and_log_det(self.params, self.context, z)
    return self.base.log_prob(z0) + inverse_log_det

  def log_prob_of_draw(self, z: jax.Array, key: jax.Array) -> jax.Array:
    """log q(z|x) `[...]` at z `[..., D]` = `self.sample(key)` (or the draw of a q with the
    same parameter values, e.g. its `stop_gradient` copy): what DReG and the
    score-function estimator need. Its value comes from the base draw z0 of `key`,
    exact at any gate; its derivatives (in z and in q's parameters) are those of the
    inverse, z0 = f^-1(z), by the implicit function theorem: one linear solve with
    the flow's Jacobian at z0, `[..., D, D]`, and no inverse passes."""
    z0 = _preimage(self.flow, self.params, self.context, z,
                   jax.lax.stop_gradient(self.base.sample(key)))
    return self.base.log_prob(z0) - self.flow.forward_and_log_det(self.params, self.context,
                                                                  z0)[1]

  @property
  def mean(self) -> jax.Array:
    """The flow applied to q0's mean (not E[z]: a summary for pictures and active units)."""
    return self.flow.forward_and_log_det(self.params, self.context, self.base.mean)[0]


def _preimage(flow, params, context, y: jax.Array, x: jax.Array) -> jax.Array:
  """f^-1(y) `[..., D]` for x `[..., D]` with f(x) = y: x itself, differentiable as
  f^-1 is (dx = J^-1 (dy - df/dtheta dtheta), J = df/dx at x, by `jax.lax.custom_root`)."""
  def tangent_solve(linear, v):
    d = v.shape[-1]
    basis = jnp.broadcast_to(jnp.eye(d, dtype=v.dtype).reshape((d,) + (1,) * (v.ndim - 1)
                                                                + (d,)), (d,) + v.shape)
    jacobian = jnp.moveaxis(jax.vmap(linear)(basis), 0, -1)  # [..., D out, D in]
    return jnp.linalg.solve(jacobian, v[..., None])[..., 0]
  residual = lambda v: flow.forward_and_log_det(params, context, v)[0] - y
  return jax.lax.custom_root(residual, x, lambda _, guess: guess, tangent_solve)


def inverse_error(q: FlowPosterior, key: jax.Array) -> jax.Array:
  """|log q by the inverse - log q carried| `[...]` at one draw of q per example, nats:
  how far `log_prob` is off where the flow's gates are this small."""
  z, log_q = q.sample_and_log_prob(key)
  return jnp.abs(q.log_prob(z) - log_q)


# -- bijector steps: each one invertible map of z, conditioned on the encoder's context --
# A step has `has_params`, `context_size(dim)`, `init(key, dim)`,
# `forward_and_log_det(params, context, x)` -> (y, log |det dy/dx|) and
# `inverse_and_log_det(params, context, y)` -> (x, log |det dx/dy|) (distrax's shape),
# x, y `[..., D]`, the log-determinants `[...]`.


def _no_inverse(name: str) -> NotImplementedError:
  return NotImplementedError(
      f"a {name} flow has no closed-form inverse, so its density is known only at its own "
      f"draws: AIS from q needs it elsewhere; use --ais_start=prior (any posterior) or "
      f"--posterior=iaf or gaussian")


@dataclasses.dataclass(frozen=True)
class PlanarStep:
  """f(z) = z + u tanh(w.z + b), its u, w, b (2 D + 1 numbers) given per example by the
  encoder, u constrained so that f is invertible (Rezende & Mohamed, appendix A)."""
  has_params = False  # every parameter is per example, in the context

  def context_size(self, dim: int) -> int:
    return 2 * dim + 1

  def init(self, key: jax.Array, dim: int) -> None:  # pylint: disable=unused-argument
    return None

  def forward_and_log_det(self, params, context, z):  # pylint: disable=unused-argument
    d = z.shape[-1]
    u, w, b = context[..., :d], context[..., d:2 * d], context[..., 2 * d]
    # w.u_hat = softplus(w.u) - 1 >= -1 keeps f invertible.
    wu = jnp.sum(w * u, -1, keepdims=True)
    u_hat = u + (distributions.softplus(wu) - 1.0 - wu) * w / (
        jnp.sum(w * w, -1, keepdims=True) + 1e-12)
    h = jnp.tanh(jnp.sum(w * z, -1) + b)
    return (z + u_hat * h[..., None],
            jnp.log(jnp.abs(1.0 + (1.0 - h * h) * jnp.sum(w * u_hat, -1))))

  has_inverse = False

  def inverse_and_log_det(self, params, context, y):
    raise _no_inverse("planar")


@dataclasses.dataclass(frozen=True)
class RadialStep:
  """f(z) = z + beta h(r) (z - z0), h = 1 / (alpha + r), r = |z - z0|, its z0, alpha and
  beta (D + 2 numbers) given per example by the encoder, beta >= -alpha so that f is
  invertible (Rezende & Mohamed, 2015, section 4.1):
  log |det| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r), computed with
  s = alpha + beta > 0 as 1 + beta h = (s + r) / (alpha + r) and the second factor as
  (alpha s + r (2 alpha + r)) / (alpha + r)^2: sums of positive terms, where 1 + beta h
  cancels to float32 rounding near z0 with beta near -alpha."""
  has_params = False
  has_inverse = False

  def context_size(self, dim: int) -> int:
    return dim + 2

  def init(self, key: jax.Array, dim: int) -> None:  # pylint: disable=unused-argument
    return None

  def forward_and_log_det(self, params, context, z):  # pylint: disable=unused-argument
    d = z.shape[-1]
    z0 = context[..., :d]
    alpha = distributions.softplus(context[..., d])
    s = distributions.softplus(context[..., d + 1])  # alpha + beta
    beta = s - alpha
    diff = z - z0
    sq = jnp.sum(diff * diff, -1)
    eps = 1e-12
    r = jnp.sqrt(sq + eps)  # a finite gradient at z = z0; the Jacobian below is this map's
    h = 1.0 / (alpha + r)
    # 1 + beta h - beta h^2 sq / r, times (alpha + r)^2; r - sq / r = eps / r exactly.
    second = alpha * s + r * (2.0 * alpha + r) + beta * (eps / r)
    log_a = jnp.log(alpha + r)
    log_det = (d - 1) * (jnp.log(s + r) - log_a) + jnp.log(second) - 2.0 * log_a
    return z + (beta * h)[..., None] * diff, log_det

  def inverse_and_log_det(self, params, context, y):
    raise _no_inverse("radial")


@dataclasses.dataclass(frozen=True)
class Reverse:
  """Reverses the order of z's entries (between autoregressive steps): volume-preserving."""
  has_params = False
  has_inverse = True

  def context_size(self, dim: int) -> int:  # pylint: disable=unused-argument
    return 0

  def init(self, key: jax.Array, dim: int) -> None:  # pylint: disable=unused-argument
    return None

  def forward_and_log_det(self, params, context, z):  # pylint: disable=unused-argument
    return z[..., ::-1], jnp.zeros(z.shape[:-1], z.dtype)

  inverse_and_log_det = forward_and_log_det


def _made_masks(dim: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
  """MADE masks (Germain et al., 2015) for inputs in order 1..D: hidden unit k of a layer
  has degree k mod (D - 1) + 1 and sees inputs of degree <= its own; output i sees
  hidden units of degree < i, so it depends on z_1..z_{i-1} only."""
  degrees = [np.arange(1, dim + 1)]
  for width in hidden:
    degrees.append(np.arange(width) % max(dim - 1, 1) + 1)
  masks = [(d_out[None, :] >= d_in[:, None]).astype(np.float32)
           for d_in, d_out in zip(degrees[:-1], degrees[1:])]
  masks.append((np.arange(1, dim + 1)[None, :] > degrees[-1][:, None]).astype(np.float32))
  return masks


@dataclasses.dataclass(frozen=True)
class IAFStep:
  """One IAF step: a MADE of `hidden` ELU layers whose first layer also takes the
  encoder's context h (`context_dim` numbers) gives m and s;
  z' = sigma z + (1 - sigma) m, sigma = GATE_FLOOR + (1 - GATE_FLOOR) sigmoid(s).
  The gate's bias starts at `gate_bias` (sigma about 0.73), so a new step moves z gently
  (Kingma et al.'s forget-gate bias)."""
  hidden: tuple[int, ...] = (200,)
  context_dim: int = 50
  gate_bias: float = 1.0
  has_params = True  # its MADE network, shared by every example
  has_inverse = True

  def context_size(self, dim: int) -> int:  # pylint: disable=unused-argument
    return self.context_dim

  def init(self, key: jax.Array, dim: int) -> dict:
    """`{"w": [...], "b": [...], "context": [C, H1], "out": ..., "out_b": ...}`,
    LeCun-normal like `nn.Dense`, the output layer near zero."""
    sizes = (dim,) + tuple(self.hidden)
    keys = jax.random.split(key, len(sizes) + 1)
    w = [jax.random.normal(k, (a, b)) / math.sqrt(a) for k, a, b in
         zip(keys, sizes[:-1], sizes[1:])]
    return {"w": w, "b": [jnp.zeros((b,)) for b in sizes[1:]],
            "context": jax.random.normal(keys[-2], (self.context_dim, sizes[1]))
                       / math.sqrt(self.context_dim),
            "out": 0.01 * jax.random.normal(keys[-1], (sizes[-1], 2 * dim)) / math.sqrt(sizes[-1]),
            "out_b": jnp.zeros((2 * dim,))}

  def _ms(self, p, z, h):
    """m and the gate's pre-activation s: `[..., D]` each."""
    dim = z.shape[-1]
    masks = _made_masks(dim, tuple(self.hidden))
    a = z
    for i, (w, b, mask) in enumerate(zip(p["w"], p["b"], masks)):
      a = a @ (w * mask) + b
      if i == 0:
        a = a + h @ p["context"]
      a = jax.nn.elu(a)
    out = a @ (p["out"] * np.concatenate([masks[-1], masks[-1]], axis=1)) + p["out_b"]
    return out[..., :dim], out[..., dim:] + self.gate_bias

  @staticmethod
  def _gate(s):
    """(sigma, log sigma) of the gate's pre-activation s, sigma >= GATE_FLOOR."""
    log_gate = jnp.logaddexp(math.log(GATE_FLOOR),
                             math.log1p(-GATE_FLOOR) + jax.nn.log_sigmoid(s))
    return jnp.exp(log_gate), log_gate

  def forward_and_log_det(self, params, context, z):
    m, s = self._ms(params, z, context)
    gate, log_gate = self._gate(s)
    return gate * z + (1.0 - gate) * m, jnp.sum(log_gate, -1)

  def inverse_and_log_det(self, params, context, y):
    """D passes, pass i solving entry i from the entries before it,
    x_i = (y_i - (1 - sigma_i) m_i) / sigma_i. Entries not yet solved enter the network
    as 0 (their weights are masked to 0, and 0 times a stale, perhaps infinite, value
    would be NaN)."""
    index = jnp.arange(y.shape[-1])

    def one_pass(i, x):
      m, s = self._ms(params, x, context)
      gate, _ = self._gate(s)
      return jnp.where(index == i, (y - (1.0 - gate) * m) / gate, x)

    x = jax.lax.fori_loop(0, y.shape[-1], one_pass, jnp.zeros_like(y))
    return x, -self.forward_and_log_det(params, context, x)[1]


class _Chain:
  """Steps applied in order, z = f_T(... f_1(z0)): their log-determinants add up. The
  parameters are a list, one entry per step that has them (step i's from
  `fold_in(key, i)`, counting those steps); the context is each step's own slice in
  turn, or with `shared_context` every step reads the same (IAF's h).
  Subclasses give `bijectors` and `shared_context`."""

  bijectors: tuple
  shared_context: bool

  @property
  def has_params(self) -> bool:
    return any(b.has_params for b in self.bijectors)

  @property
  def has_inverse(self) -> bool:
    return all(b.has_inverse for b in self.bijectors)

  def context_size(self, dim: int) -> int:
    sizes = [b.context_size(dim) for b in self.bijectors]
    return max(sizes, default=0) if self.shared_context else sum(sizes)

  def init(self, key: jax.Array, dim: int) -> list:
    owners = [b for b in self.bijectors if b.has_params]
    return [b.init(jax.random.fold_in(key, i), dim) for i, b in enumerate(owners)]

  def _each(self, params, context, dim: int):
    """(bijector, its params, its context) in order."""
    params, start = iter(params or ()), 0
    for b in self.bijectors:
      size = b.context_size(dim)
      if self.shared_context:
        c = context[..., :size]
      else:
        c, start = context[..., start:start + size], start + size
      yield b, next(params) if b.has_params else None, c

  def forward_and_log_det(self, params, context, z):
    """z `[..., D]` -> (f(z) `[..., D]`, log |det df/dz| `[...]`)."""
    log_det = jnp.zeros(z.shape[:-1], z.dtype)
    for b, p, c in self._each(params, context, z.shape[-1]):
      z, step_log_det = b.forward_and_log_det(p, c, z)
      log_det = log_det + step_log_det
    return z, log_det

  def inverse_and_log_det(self, params, context, y):
    """f^-1(y) `[..., D]` and log |det df^-1/dy| (minus the forward one at f^-1(y))."""
    steps = list(self._each(params, context, y.shape[-1]))
    for b, p, c in reversed(steps):
      y, _ = b.inverse_and_log_det(p, c, y)
    return y, -self.forward_and_log_det(params, context, y)[1]

  forward = forward_and_log_det

  def inverse(self, params, context, y):
    return self.inverse_and_log_det(params, context, y)[0]


@dataclasses.dataclass(frozen=True)
class Chain(_Chain):
  """Any steps (`PlanarStep`, `IAFStep`, `Reverse`, or your own with the same methods)."""
  bijectors: tuple
  shared_context: bool = False


class _Repeated(_Chain):
  """`steps` copies of the subclass's `step`, each with its own slice of the context."""
  shared_context = False

  @property
  def bijectors(self) -> tuple:
    return (self.step,) * self.steps


@dataclasses.dataclass(frozen=True)
class Planar(_Repeated):
  """`steps` planar maps (`PlanarStep`)."""
  steps: int
  step = PlanarStep()


@dataclasses.dataclass(frozen=True)
class Radial(_Repeated):
  """`steps` radial maps (`RadialStep`)."""
  steps: int
  step = RadialStep()


@dataclasses.dataclass(frozen=True)
class IAF(_Chain):
  """`steps` IAF steps (`IAFStep`), z's order reversed between them, each reading the
  encoder's context h of `context_dim` numbers."""
  steps: int
  hidden: tuple[int, ...] = (200,)
  context_dim: int = 50
  gate_bias: float = 1.0
  shared_context = True
  _gate = staticmethod(IAFStep._gate)  # pylint: disable=protected-access

  @property
  def bijectors(self) -> tuple:
    step = IAFStep(tuple(self.hidden), self.context_dim, self.gate_bias)
    out = []
    for t in range(self.steps):
      out += [Reverse(), step] if t else [step]
    return tuple(out)


# The flows by `--posterior` name: (steps, dim, hidden) -> the flow. A new flow is its
# step (a bijector, here or in a file of its own) and its line here.
FLOWS = {
    "planar": lambda steps, dim, hidden: Planar(steps),
    "radial": lambda steps, dim, hidden: Radial(steps),
    "iaf": lambda steps, dim, hidden: IAF(steps, tuple(hidden), context_dim=dim),
}


def make(name: str, steps: int, dim: int, hidden: tuple[int, ...] = (200,)):
  """The flow `name` (a key of `FLOWS`) of `steps` steps over z of `dim` entries;
  None for "gaussian" or zero steps (the posterior stays q0)."""
  if name == "gaussian" or steps == 0:
    return None
  if name not in FLOWS:
    raise ValueError(f"posterior={name!r}: expected gaussian or one of {list(FLOWS)}")
  return FLOWS[name](steps, dim, hidden)
