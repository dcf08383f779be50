"""Annealed importance sampling (AIS) of log p(x) with Hamiltonian Monte Carlo moves,
and its reverse chain from exact posterior samples (bidirectional Monte Carlo).

AIS (Neal, 2001) walks chains from an initial density p0(z) (the prior, or the
posterior q(z|x)) to the posterior p(z|x) through the geometric path

  f_t(z) = log p0(z) + beta_t [log p(x, z) - log p0(z)],   0 = beta_0 < ... < beta_T = 1,

each move an HMC transition that leaves f_t invariant. A chain's log weight
sum_t (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log p0(z_{t-1})] has
E[exp(weight)] = p(x), so the log-mean-exp over chains is a stochastic lower
bound of log p(x) that tightens as T grows (Wu, Burda, Salakhutdinov & Grosse,
2017, use it to evaluate decoder-based models). Run backwards from an exact
sample of p(z|x), which data simulated from the model provides ((x, z) ~
p(z) p(x|z)), the same walk estimates 1/p(x): minus its log-mean-exp is a
stochastic upper bound, and the two sandwich the true value (BDMC: Grosse,
Ghahramani & Adams, 2015).

The model is the core's: an encoder (used only for the start "posterior"), a
decoder and a prior (see `objectives`). Per example, `num_chains` chains run
vmapped. Their HMC step sizes come from a pilot run: `pilot_chains` other chains
walk the same forward path, each adapting its step size after every move toward
`target_acceptance` (as Wu et al. do), and move t of the estimate then uses the
pilot's (geometric mean) step size after its move t, frozen. A step size adapted
from the estimate's own chains would make each move depend on that chain's past,
so the moves would no longer leave f_t invariant and E[exp(weight)] would not be
p(x): on a linear-Gaussian model such AIS came out 0.04 nats above log p(x) at
T = 1000 (tests/test_ais.py). The pilot costs pilot_chains / num_chains more moves.

Keys: example j of a data set uses `fold_in(key, j)`; within an example,
`split(key, 3)` gives the start key (chain c starts from `fold_in(start_key, c)`,
the samples `objectives.log_weights` draws with that key), the moves' key (move t
uses `fold_in(moves_key, t)`) and the pilot's key (its own start and moves keys the
same way), so cutting the schedule into segments changes no number.
"""

import math
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions
from vae_jax import engine
from vae_jax import flows
from vae_jax import labels
from vae_jax import memory
from vae_jax import multihost
from vae_jax import objectives

STARTS = ("prior", "posterior")
ADAPT_RATE = 0.1  # the pilot's step-size adaptation over 1,000 levels: at most about 6.5% a move
# The pilot walks at least this many levels: at T = 10 its 10 moves could change a step
# size by at most 1.9x, and it stayed near its start with acceptance 1.000.
PILOT_MIN_MOVES = 100


def sigmoid_schedule(num_intermediate: int, radius: float = 4.0) -> np.ndarray:
  """beta_0 = 0 < ... < beta_T = 1 for T = `num_intermediate`: a sigmoid over
  [-radius, radius] rescaled to [0, 1], dense at both ends where the densities
  change fastest (Grosse et al., 2015; Wu et al., 2017). `[T + 1]` float64."""
  if num_intermediate < 1:
    raise ValueError(f"num_intermediate={num_intermediate}: need at least 1")
  s = 1 / (1 + np.exp(-np.linspace(-radius, radius, num_intermediate + 1)))
  return (s - s[0]) / (s[-1] - s[0])


class Chains(NamedTuple):
  """The chains of one example (leading axis `[C]`; z `[C, 1, dim]`), carried between
  segments of the schedule."""
  z: jax.Array
  log_p0: jax.Array  # [C] log p0(z)
  log_joint: jax.Array  # [C] log p(x, z)
  grad_p0: jax.Array  # [C, 1, dim]
  grad_joint: jax.Array
  step_size: jax.Array  # [C]
  log_weight: jax.Array  # [C] the AIS log weight so far
  accepted: jax.Array  # [C] sum of the acceptance probabilities so far


class Target(NamedTuple):
  """One example's two log densities of a single chain's z `[1, dim]` (each -> `[1]`)."""
  log_p0: callable
  log_joint: callable


def target(encoder, decoder, prior, x, start: str) -> Target:
  """The densities of the path for one example x `[1, ...]`: p0 (the prior, or q(z|x)
  for start="posterior") and p(x, z)."""
  if start not in STARTS:
    raise ValueError(f"start={start!r}: expected one of {list(STARTS)}")
  prior = distributions.StandardNormal() if prior is None else prior
  log_joint = lambda z: decoder(z).log_prob(x) + prior.log_prob(z)
  p0 = jax.lax.stop_gradient(encoder(x)) if start == "posterior" else prior
  return Target(p0.log_prob, log_joint)


def _values_and_grads(tgt: Target, z):
  """log p0, log p(x, z) `[C]` and their gradients in z `[C, 1, dim]`, over the chains."""
  f = lambda fn: jax.vmap(jax.value_and_grad(lambda zc: fn(zc)[0]))(z)
  (lp0, g0), (lj, gj) = f(tgt.log_p0), f(tgt.log_joint)
  return lp0, lj, g0, gj


def start_chains(tgt: Target, z, step_size: float) -> Chains:
  """Chains at z `[C, 1, dim]` with zero weight."""
  lp0, lj, g0, gj = _values_and_grads(tgt, z)
  c = z.shape[0]
  return Chains(z, lp0, lj, g0, gj, jnp.full((c,), step_size, z.dtype), jnp.zeros((c,), lj.dtype),
                jnp.zeros((c,), lj.dtype))


def _per_chain(v, like):
  return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def hmc_move(tgt: Target, chains: Chains, beta, key, *, num_leapfrog: int,
             target_acceptance: float | None, adapt_rate: float = ADAPT_RATE) -> Chains:
  """One HMC transition per chain leaving f_beta invariant (identity mass, `num_leapfrog`
  leapfrog steps of the chain's step size, a Metropolis test); then, unless
  `target_acceptance` is None, each chain's step size is multiplied by
  exp(adapt_rate (acceptance probability - target)): up to a few percent a move,
  toward a mean acceptance equal to the target."""
  mix = lambda p0, joint: p0 + beta * (joint - p0)
  eps = _per_chain(chains.step_size, chains.z)
  k_momentum, k_accept = jax.random.split(key)
  p = jax.random.normal(k_momentum, chains.z.shape, chains.z.dtype)

  def leapfrog(_, s):
    z, p, lp0, lj, g0, gj = s
    p = p + 0.5 * eps * mix(g0, gj)
    z = z + eps * p
    lp0, lj, g0, gj = _values_and_grads(tgt, z)
    return z, p + 0.5 * eps * mix(g0, gj), lp0, lj, g0, gj

  z, p_new, lp0, lj, g0, gj = jax.lax.fori_loop(
      0, num_leapfrog, leapfrog,
      (chains.z, p, chains.log_p0, chains.log_joint, chains.grad_p0, chains.grad_joint))
  kinetic = lambda q: 0.5 * jnp.sum(jnp.square(q), axis=tuple(range(1, q.ndim)))
  log_accept = (mix(lp0, lj) - kinetic(p_new)) - (mix(chains.log_p0, chains.log_joint) - kinetic(p))
  log_accept = jnp.where(jnp.isnan(log_accept), -jnp.inf, log_accept)  # a diverged move
  accept = jnp.log(jax.random.uniform(k_accept, log_accept.shape)) < log_accept
  prob = jnp.exp(jnp.minimum(log_accept, 0.0))
  pick = lambda new, old: jnp.where(_per_chain(accept, new), new, old)
  step_size = chains.step_size
  if target_acceptance is not None:
    # A stochastic-approximation step on log(step size): at equilibrium the mean
    # acceptance probability is the target.
    step_size = jnp.clip(step_size * jnp.exp(adapt_rate * (prob - target_acceptance)), 1e-4, 10.0)
  return Chains(pick(z, chains.z), pick(lp0, chains.log_p0), pick(lj, chains.log_joint),
                pick(g0, chains.grad_p0), pick(gj, chains.grad_joint), step_size,
                chains.log_weight, chains.accepted + prob)


def anneal(tgt: Target, chains: Chains, betas, moves_key, first_move, *, num_leapfrog: int,
           step_sizes=None, target_acceptance: float | None = None,
           adapt_rate: float = ADAPT_RATE):
  """Moves `first_move + 1, ...` of the path: for each pair (beta_prev, beta) of
  `betas` `[S + 1]`, the weight gains (beta - beta_prev) [log p(x, z) - log p0(z)],
  then an HMC move leaves f_beta invariant. Decreasing betas run the reverse chain.
  Move t's key is `fold_in(moves_key, t)` (`first_move` may be traced).

  step_sizes: `[S]`, the step size of each move, fixed in advance (the estimate:
    each move then leaves its f_beta invariant); or None: each chain moves with its
    own `chains.step_size`, adapted after every move toward `target_acceptance`
    when that is given (a pilot run, whose weights are not an unbiased estimate).

  Returns:
    (the chains after the last move, the chains' geometric-mean step size after
    each move `[S]`).
  """
  def one(chains, args):
    prev, beta, t, eps = args
    if eps is not None:
      chains = chains._replace(step_size=jnp.full_like(chains.step_size, eps))
    chains = chains._replace(
        log_weight=chains.log_weight + (beta - prev) * (chains.log_joint - chains.log_p0))
    chains = hmc_move(tgt, chains, beta, jax.random.fold_in(moves_key, t),
                      num_leapfrog=num_leapfrog,
                      target_acceptance=None if eps is not None else target_acceptance,
                      adapt_rate=adapt_rate)
    return chains, jnp.exp(jnp.mean(jnp.log(chains.step_size)))

  moves = first_move + 1 + jnp.arange(betas.shape[0] - 1)
  return jax.lax.scan(one, chains, (betas[:-1], betas[1:], moves, step_sizes))


def level_step_sizes(pilot_sizes, reverse: bool = False):
  """The step sizes of the moves of a path from a forward pilot's `[..., T]` (its step
  size after move t, which targets beta_t): `[..., T]` for the forward path's moves,
  or for the reverse path's (move t targets beta_{T-t}; beta_0 takes beta_1's)."""
  if not reverse:
    return pilot_sizes
  by_level = jnp.concatenate([pilot_sizes[..., :1], pilot_sizes], axis=-1)  # beta_0..beta_T
  return jnp.flip(by_level, axis=-1)[..., 1:]


def log_mean_exp_and_stderr(log_w) -> tuple[jax.Array, jax.Array]:
  """log mean_c exp(log_w_c) over the last axis (C values), and its jackknife standard
  error over the C values (NaN for C = 1).

  The jackknife recomputes the estimate without each value in turn; where the
  weights are heavy-tailed (a short AIS schedule) it stays calibrated where the
  delta method sd(w) / (sqrt(C) mean(w)) does not: at T = 10 moves the delta
  method's error was 0.4-0.6 of the spread over keys, the jackknife's 1.1
  (tests/test_ais.py checks 0.6-1.6 at T = 10 and 1000).
  """
  c = log_w.shape[-1]
  lme = jax.nn.logsumexp(log_w, axis=-1) - math.log(c)
  if c == 1:
    return lme, jnp.full(lme.shape, jnp.nan)
  top = jnp.max(log_w, axis=-1, keepdims=True)
  w = jnp.exp(log_w - top)
  total = jnp.sum(w, axis=-1, keepdims=True)
  # Without value i: total - w_i, but summed afresh for the largest, where the
  # difference would cancel to rounding.
  is_top = jnp.arange(c) == jnp.argmax(log_w, axis=-1)[..., None]
  rest_of_top = jnp.sum(jnp.where(is_top, 0.0, w), axis=-1, keepdims=True)
  loo = jnp.log(jnp.where(is_top, rest_of_top, total - w)) - math.log(c - 1)
  se = jnp.sqrt((c - 1) / c * jnp.sum(jnp.square(loo - jnp.mean(loo, -1, keepdims=True)), -1))
  return lme, se


class AISResult(NamedTuple):
  """Per example `[batch]`: the estimate (nats), its standard error over the chains
  (jackknife), and the chains' mean acceptance probability."""
  log_px: jax.Array
  stderr: jax.Array
  acceptance: jax.Array


def _sampling_prior(prior, dim: int):
  """The prior as a sampler: N(0, I) of `dim` where it was left without a size."""
  if prior is None or getattr(prior, "dim", 0) is None:  # N(0, I) of no set size
    return distributions.StandardNormal(dim)
  return prior


def begin(encoder, decoder, prior, x, key, *, num_chains: int, start: str, step_size: float,
          z_exact=None) -> tuple[Target, Chains]:
  """One example x `[1, ...]`: its path's densities and its chains at their start, chain
  c drawn from p0 with `fold_in(split(key)[0], c)`, or every chain at `z_exact` `[1, dim]`
  (the reverse chain)."""
  tgt = target(encoder, decoder, prior, x, start)
  if z_exact is not None:
    return tgt, start_chains(tgt, jnp.broadcast_to(z_exact, (num_chains,) + z_exact.shape),
                             step_size)
  keys = objectives.sample_keys(jax.random.split(key)[0], 0, num_chains)
  q = encoder(x)
  if start == "posterior":
    z0 = jax.vmap(q.sample)(keys)
  else:
    p0 = _sampling_prior(prior, jnp.shape(q.sample(keys[0]))[-1])
    z0 = jax.vmap(lambda k: p0.sample(k, (1,)))(keys)
  return tgt, start_chains(tgt, z0, step_size)


def moves_key(key):
  """The key of an example's HMC moves (move t: `fold_in(moves_key(key), t)`)."""
  return jax.random.split(key)[1]


def pilot_key(key):
  """The key of an example's pilot run (its own start and moves keys from it, as an
  example's from `key`); `split(key, 3)` keeps the first two keys `split(key)`'s."""
  return jax.random.split(key, 3)[2]


def pilot_moves(num_intermediate: int) -> int:
  """The pilot's path length P for an estimate of T moves: T, or `PILOT_MIN_MOVES`."""
  return max(num_intermediate, PILOT_MIN_MOVES)


def adapt_rate(num_intermediate: int) -> float:
  """The pilot's adaptation rate for an estimate of T moves: `ADAPT_RATE` over 1,000
  levels or more, faster over a shorter pilot so that its step sizes can travel as far
  (from 0.01 to 0.5 takes about 110 moves at 0.1)."""
  return ADAPT_RATE * max(1.0, 1000 / pilot_moves(num_intermediate))


def pilot_levels(num_intermediate: int) -> np.ndarray:
  """For each move t = 1..T of the estimate, the index of the pilot's move (of P) that
  targets the same beta, `[T]`: the sigmoid schedule depends on t / T alone."""
  p = pilot_moves(num_intermediate)
  return np.round(np.arange(1, num_intermediate + 1) * p / num_intermediate).astype(int) - 1


def pilot(encoder, decoder, prior, x, key, num_intermediate: int, *, num_chains: int,
          start: str, num_leapfrog: int, step_size: float, target_acceptance: float):
  """The pilot of one example x `[1, ...]` along the forward sigmoid path of
  `pilot_moves(num_intermediate)` moves: `num_chains` chains from p0 (with
  `pilot_key(key)`), each adapting its step size from `step_size` toward
  `target_acceptance`. Returns the chains' geometric-mean step size after the move
  of each of the estimate's T levels, `[T]` (see `level_step_sizes`)."""
  k = pilot_key(key)
  tgt, chains = begin(encoder, decoder, prior, x, k, num_chains=num_chains, start=start,
                      step_size=step_size)
  betas = jnp.asarray(sigmoid_schedule(pilot_moves(num_intermediate)), jnp.float32)
  sizes = anneal(tgt, chains, betas, moves_key(k), 0, num_leapfrog=num_leapfrog,
                 target_acceptance=target_acceptance,
                 adapt_rate=adapt_rate(num_intermediate))[1]
  return sizes[pilot_levels(num_intermediate)]


def _finish(chains: Chains, num_moves: int, reverse: bool) -> AISResult:
  # The reverse chain's weights estimate 1 / p(x): minus their log-mean-exp bounds from above.
  lme, se = log_mean_exp_and_stderr(chains.log_weight)
  acceptance = jnp.mean(chains.accepted) / num_moves
  return AISResult((-lme if reverse else lme)[None], se[None], acceptance[None])


def _over_batch(encoder, decoder, prior, x, z, key, num_intermediate, *, num_chains, start,
                num_leapfrog, step_size, target_acceptance, pilot_chains) -> AISResult:
  """Every example of x `[batch, ...]` through the whole path (the reverse one from z
  `[batch, dim]`, else z is None), with the step sizes of a pilot (none when
  `target_acceptance` is None: every move at `step_size`)."""
  forward = jnp.asarray(sigmoid_schedule(num_intermediate), jnp.float32)
  reverse = z is not None
  betas = jnp.flip(forward) if reverse else forward

  def one(xj, zj, kj):
    sizes = jnp.full((num_intermediate,), step_size, jnp.float32)
    if target_acceptance is not None:
      sizes = level_step_sizes(
          pilot(encoder, decoder, prior, xj[None], kj, num_intermediate, num_chains=pilot_chains,
                start=start, num_leapfrog=num_leapfrog, step_size=step_size,
                target_acceptance=target_acceptance), reverse)
    tgt, chains = begin(encoder, decoder, prior, xj[None], kj, num_chains=num_chains,
                        start=start, step_size=step_size,
                        z_exact=None if zj is None else zj[None])
    chains, _ = anneal(tgt, chains, betas, moves_key(kj), 0, num_leapfrog=num_leapfrog,
                       step_sizes=sizes)
    return _finish(chains, num_intermediate, reverse)
  keys = objectives.sample_keys(key, 0, x.shape[0])
  out = jax.vmap(one)(x, z, keys)
  return AISResult(*(v[:, 0] for v in out))


def ais(encoder, decoder, x, key, *, prior=None, num_chains: int = 16,
        num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
        step_size: float = 0.01, target_acceptance: float | None = 0.65,
        pilot_chains: int = 4) -> AISResult:
  """AIS estimates of log p(x) for each example of a batch: a stochastic lower bound
  (E[exp(estimate)] = p(x)).

  Args:
    encoder, decoder, prior: the model, as for `objectives.elbo` (the encoder only
      for start="posterior", and for the size of z).
    x: `[batch, ...]`.
    key: a `jax.random` key; example j uses `fold_in(key, j)`.
    num_chains: independent chains per example (C).
    num_intermediate: T, the moves of the sigmoid schedule (`sigmoid_schedule`);
      T = 1 from the posterior is importance sampling with C samples (the IWAE
      bound with k = C).
    start: "prior" (p0 = p(z)) or "posterior" (p0 = q(z|x)).
    num_leapfrog: leapfrog steps of each HMC move.
    step_size, target_acceptance, pilot_chains: the HMC step sizes: a pilot of
      `pilot_chains` chains adapts them from `step_size` toward `target_acceptance`
      and the estimate's moves use them frozen; target_acceptance=None: every move
      at `step_size`, no pilot.

  Returns:
    `AISResult`, each field `[batch]`.
  """
  return _over_batch(encoder, decoder, prior, x, None, key, num_intermediate,
                     num_chains=num_chains, start=start, num_leapfrog=num_leapfrog,
                     step_size=step_size, target_acceptance=target_acceptance,
                     pilot_chains=pilot_chains)


def reverse_ais(encoder, decoder, x, z, key, *, prior=None, num_chains: int = 16,
                num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
                step_size: float = 0.01, target_acceptance: float | None = 0.65,
                pilot_chains: int = 4) -> AISResult:
  """The reverse chain of BDMC from exact posterior samples z `[batch, dim]` of x
  `[batch, ...]` (simulated data: `simulate`): a stochastic upper bound of log p(x)
  per example (E[exp(-estimate)] = 1 / p(x)). Arguments as for `ais`; every chain of
  example j starts at z_j; the pilot walks the forward path, and the reverse moves
  use its step sizes level by level."""
  return _over_batch(encoder, decoder, prior, x, z, key, num_intermediate,
                     num_chains=num_chains, start=start, num_leapfrog=num_leapfrog,
                     step_size=step_size, target_acceptance=target_acceptance,
                     pilot_chains=pilot_chains)


def simulate(decoder, prior, key, num_examples: int, dim: int) -> tuple[jax.Array, jax.Array]:
  """(x, z) ~ p(z) p(x|z): `[n, ...]` data and `[n, dim]` its exact posterior samples.
  Example j draws z from `fold_in(fold_in(key, j), 0)`, x from `fold_in(..., 1)`."""
  p = _sampling_prior(prior, dim)

  def one(k):
    z = p.sample(jax.random.fold_in(k, 0), (1,))
    return decoder(z).sample(jax.random.fold_in(k, 1))[0], z[0]
  return jax.vmap(one)(objectives.sample_keys(key, 0, num_examples))


# -- over a data set: examples in batches, the schedule cut into short compiled calls --

MAX_INTERMEDIATE = 10 ** 6  # the pilot keeps a step size per move and example


def sigmoid_betas(num_intermediate: int, index) -> np.ndarray:
  """`sigmoid_schedule(num_intermediate)[index]` without the whole schedule: float64."""
  r, t = 4.0, np.asarray(index, np.float64)
  s = lambda u: 1 / (1 + np.exp(-(-r + 2 * r * u / num_intermediate)))
  return (s(t) - s(0.0)) / (s(float(num_intermediate)) - s(0.0))


def _row(xj):
  """One row of a batch as a batch of one: `[1, ...]` (x, or x and its label)."""
  return jax.tree_util.tree_map(lambda a: a[None], xj)


class _Runner:
  """One data set's chains as compiled calls: start a batch of examples, move it through
  a segment of the schedule (the pilot's, then the estimate's), read its results."""

  def __init__(self, parts_fn, params, key, *, num_intermediate, reverse, num_chains,
               pilot_chains, start, num_leapfrog, step_size, target_acceptance):
    self.params, self.key, self.moves, self.reverse = params, key, num_intermediate, reverse
    self.num_chains, self.pilot_chains = num_chains, pilot_chains
    self.step_size, self.adapt = step_size, target_acceptance is not None

    def begin_rows(params, xb, keys, zb, num_chains, exact):
      bind = labels.binder(parts_fn, params, xb)

      def one(xj, kj, zj):
        parts, xj = bind(_row(xj))
        return begin(parts.encoder, parts.decoder, parts.prior, xj, kj,
                     num_chains=num_chains, start=start, step_size=step_size,
                     z_exact=zj[None] if exact else None)[1]
      return jax.vmap(one)(xb, keys, zb)

    def advance(params, xb, keys, chains, betas, first_move, sizes):
      """sizes `[B, S]`: the estimate's frozen step sizes; None: the pilot, adapting."""
      bind = labels.binder(parts_fn, params, xb)

      def one(xj, kj, cj, sj):
        parts, xj = bind(_row(xj))
        tgt = target(parts.encoder, parts.decoder, parts.prior, xj, start)
        return anneal(tgt, cj, betas, moves_key(kj), first_move, num_leapfrog=num_leapfrog,
                      step_sizes=sj, target_acceptance=target_acceptance,
                      adapt_rate=adapt_rate(num_intermediate))
      return jax.vmap(one)(xb, keys, chains, sizes)

    def inverse_error(params, xb, keys):
      """The largest |log q by the inverse - log q carried| at one draw per row."""
      bind = labels.binder(parts_fn, params, xb)

      def one(xj, kj):
        parts, xj = bind(_row(xj))
        q = parts.encoder(xj)
        if not isinstance(q, flows.FlowPosterior) or not q.flow.has_inverse:
          return jnp.zeros(())  # exact, or refused with its reason by the target
        return jnp.max(flows.inverse_error(q, kj))
      return jnp.max(jax.vmap(one)(xb, keys))

    self.begin = jax.jit(begin_rows, static_argnames=("num_chains", "exact"))
    self.advance = jax.jit(advance)
    self.inverse_error = jax.jit(inverse_error)

  def keys(self, offset, rows):
    return objectives.sample_keys(self.key, offset, rows)

  def segment_betas(self, first_move: int, length: int, forward: bool,
                    moves: int | None = None) -> jax.Array:
    """The betas of moves first_move + 1 ... first_move + length of a forward or reverse
    path of `moves` moves (default: the estimate's T), `[length + 1]`, the last one
    repeated past the end (moves past it add nothing to the weights)."""
    moves = self.moves if moves is None else moves
    idx = np.minimum(np.arange(first_move, first_move + length + 1), moves)
    return jnp.asarray(sigmoid_betas(moves, idx if forward else moves - idx), jnp.float32)

  def segment_sizes(self, sizes, first_move: int, length: int):
    return sizes[:, np.minimum(np.arange(first_move, first_move + length), self.moves - 1)]

  def step_sizes(self, xb, zb, keys, segment: int, poll):
    """The estimate's step size of every move `[B, T]`: from the pilot, or fixed."""
    if not self.adapt:
      return jnp.full((labels.num_rows(xb), self.moves), self.step_size, jnp.float32)
    keys = jax.vmap(pilot_key)(keys)
    chains = self.begin(self.params, xb, keys, zb, num_chains=self.pilot_chains, exact=False)
    sizes, moves = [], pilot_moves(self.moves)
    for first in range(0, moves, segment):
      chains, s = self.advance(self.params, xb, keys, chains,
                               self.segment_betas(first, segment, True, moves),
                               jnp.int32(first), None)
      sizes.append(jax.block_until_ready(s))
      poll()
    sizes = jnp.concatenate(sizes, axis=1)[:, pilot_levels(self.moves)]
    return level_step_sizes(sizes, self.reverse)

  def run_rows(self, xb, zb, offset, segment: int, poll) -> AISResult:
    """The whole path for rows xb (exact samples zb for the reverse chain)."""
    keys = self.keys(offset, labels.num_rows(xb))
    sizes = self.step_sizes(xb, zb, keys, segment, poll)
    chains = self.begin(self.params, xb, keys, zb, num_chains=self.num_chains,
                        exact=self.reverse)
    for first in range(0, self.moves, segment):
      chains, _ = self.advance(self.params, xb, keys, chains,
                               self.segment_betas(first, segment, not self.reverse),
                               jnp.int32(first), self.segment_sizes(sizes, first, segment))
      jax.block_until_ready(chains)  # poll when the work is done, not when it is queued
      poll()
    done = -(-self.moves // segment) * segment
    out = jax.vmap(lambda c: _finish(c, done, self.reverse))(chains)
    return AISResult(*(np.asarray(v[:, 0], np.float64) for v in out))


class _Job:
  """AIS over rows of a data set as an `engine.Job`: a batch of rows (the last one
  padded to the same shape) walks the pilot's path, then the estimate's, in calls of
  a segment of the schedule's moves; its sums are those of the per-row results."""

  sum_keys = ("log_px", "sq", "var", "acceptance")
  grow_rows = False  # one shape: a batch of rows, its chains and their moves

  def __init__(self, runner: _Runner, z, batch_size: int, name: str, settings: dict):
    self.runner, self.z, self.batch, self.name = runner, z, batch_size, name
    self.steps, self.settings = runner.moves, settings

  def _padded(self, rows, offset: int):
    n = labels.num_rows(rows)
    zrows = self.z[offset:offset + n]
    pad = self.batch - n
    if pad:  # one shape: pad the last batch, drop its padding after
      fill = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)])
      rows, zrows = jax.tree_util.tree_map(fill, (rows, zrows))
    return rows, zrows

  def prepare(self, rows) -> float:
    """A call's memory checked, then seconds per move (the estimate's and the pilot's)."""
    runner = self.runner
    xb, zb = self._padded(rows, 0)
    keys = runner.keys(0, labels.num_rows(xb))
    probe = min(runner.moves, 4)
    chains = runner.begin(runner.params, xb, keys, zb, num_chains=runner.num_chains,
                          exact=runner.reverse)
    args = (runner.params, xb, keys, chains, runner.segment_betas(0, probe, True),
            jnp.int32(0), runner.segment_sizes(jnp.full((labels.num_rows(xb), runner.moves),
                                                        runner.step_size), 0, probe))
    stats = runner.advance.lower(*args).compile().memory_analysis()
    if stats is not None:
      memory.check_fits(stats.temp_size_in_bytes + stats.output_size_in_bytes, 0.8,
                        f"AIS needs about {{gib}} per call ({runner.num_chains} chains x "
                        f"{labels.num_rows(xb)} examples)", "lower num_chains or batch_size")
    run = lambda call_args: jax.block_until_ready(runner.advance(*call_args))
    engine.timed(lambda: run(args))  # compiles
    unit = min(engine.timed(lambda: run(args)), engine.timed(lambda: run(args))) / probe
    if runner.adapt:  # the pilot's moves: fewer chains, but not proportionally cheaper
      pilot = runner.begin(runner.params, xb, keys, zb, num_chains=runner.pilot_chains,
                           exact=False)
      pilot_args = args[:3] + (pilot,) + args[4:6] + (None,)
      engine.timed(lambda: run(pilot_args))  # compiles
      # per move of the estimate: the pilot walks pilot_moves(T) levels for its T
      unit += (min(engine.timed(lambda: run(pilot_args)), engine.timed(lambda: run(pilot_args)))
               / probe * pilot_moves(runner.moves) / runner.moves)
    return unit

  def plan_line(self, n: int, rows: int, unit: float, total: float) -> str:
    pilot = (f"a pilot of {self.runner.pilot_chains} chains x {pilot_moves(self.steps)} moves"
             if self.runner.adapt else "no pilot")
    return (f"{self.name}: {n} examples x {self.runner.num_chains} chains x {self.steps} moves "
            f"(and {pilot}): about {engine.format_duration(total)} in all "
            f"(a move of {rows} examples, with its share of the pilot, took {unit:.4f}s); "
            f"an interruption keeps the batches finished, each of {rows} examples and about "
            f"{engine.format_duration(unit * self.steps)}")

  def sums(self, rows, offset: int, steps_per_call: int, poll) -> dict:
    n = labels.num_rows(rows)
    xb, zb = self._padded(rows, offset)
    r = self.runner.run_rows(xb, zb, offset, steps_per_call, poll)
    log_px, se, acc = r.log_px[:n], r.stderr[:n], r.acceptance[:n]
    return {"log_px": float(np.sum(log_px)), "sq": float(np.sum(np.square(log_px))),
            "var": float(np.sum(np.square(se))), "acceptance": float(np.sum(acc))}

  def summary(self, totals: dict, n: int, seconds: float) -> dict:
    mean, data_stderr = engine.mean_and_stderr(totals["log_px"], totals["sq"], n, ddof=1)
    return {"log_px": mean, "mc_stderr": math.sqrt(totals["var"]) / n,
            "data_stderr": data_stderr, "acceptance": totals["acceptance"] / n, "n": n,
            "seconds": seconds, **self.settings}


def _check_sizes(num_intermediate: int, num_chains: int, pilot_chains: int) -> None:
  if not 1 <= num_intermediate <= MAX_INTERMEDIATE:
    raise ValueError(f"num_intermediate={num_intermediate}: must be between 1 and "
                     f"{MAX_INTERMEDIATE} (the pilot keeps a step size per move)")
  if num_chains < 1 or pilot_chains < 1:
    raise ValueError(f"num_chains={num_chains}, pilot_chains={pilot_chains}: need at least 1")


def _run(parts_fn, params, x, key, z, *, num_intermediate, batch_size, progress, stop, what,
         resume=None, on_block=None, **opts):
  reverse = z is not None
  runner = _Runner(parts_fn, multihost.local_copy(params), key,
                   num_intermediate=num_intermediate, reverse=reverse, **opts)
  batch_size = max(1, min(batch_size, labels.num_rows(x)))
  settings = {"num_chains": opts["num_chains"], "num_intermediate": runner.moves,
              "start": opts["start"], "num_leapfrog": opts["num_leapfrog"],
              "pilot_chains": opts["pilot_chains"] if runner.adapt else 0,
              "schedule": "sigmoid"}
  zs = jnp.zeros((labels.num_rows(x), 1)) if z is None else z  # the forward chain ignores it
  if opts["start"] == "posterior":
    _check_inverse(runner, jax.tree_util.tree_map(lambda a: a[:batch_size], x))
  job = _Job(runner, zs, batch_size, what, settings)
  return engine.run(job, x, batch_size=batch_size, block_size=batch_size, progress=progress,
                    stop=stop, resume=resume, on_block=on_block)


# How far q's density by its inverse may sit from the carried one before AIS from q warns.
INVERSE_TOLERANCE = 1e-2


def _check_inverse(runner: _Runner, xb) -> None:
  """AIS from q evaluates q's density by inverting its flow; where the flow's gates are
  small the inverse loses digits (`flows.GATE_FLOOR`) and the weights with them: one
  warning line, measured on q's own draws for the rows `xb`."""
  err = float(runner.inverse_error(runner.params, xb, runner.keys(0, labels.num_rows(xb))))
  if not err <= INVERSE_TOLERANCE:
    logging.warning("AIS from q: the posterior's flow inverts with an error of up to %.3g nats "
                    "at q's own draws (gates near their floor), and AIS's weights carry it; "
                    "use --ais_start=prior for a number you can trust", err)


def log_likelihood(parts_fn, params, x, key, *, num_chains: int = 16,
                   num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
                   step_size: float = 0.01, target_acceptance: float | None = 0.65,
                   pilot_chains: int = 4, batch_size: int = 25, progress: bool = True,
                   stop=None, resume: dict | None = None, on_block=None) -> dict:
  """AIS over a data set x `[n, ...]` (or a `labels.Batch(x, labels)` for a conditional model: log p(x|y)):
  the same numbers as `ais` with the same key
  (example j uses `fold_in(key, j)`), computed `batch_size` examples at a time in
  compiled calls of about `engine.POLL_SECONDS` (`engine.run`), with the expected time
  logged first and a progress line at most every `engine.PROGRESS_SECONDS`. `stop` is
  polled after each call (raises `engine.EvaluationStopped`); `on_block` is given the
  sums after each batch, and `resume` (what it was given last) continues an interrupted
  run with the same key to the uninterrupted numbers (`engine.run`).

  Returns:
    {"log_px": mean over examples of the per-example AIS estimates (a stochastic
    lower bound, nats), "mc_stderr": its Monte Carlo standard error (the chains'
    jackknife errors combined), "data_stderr": over the choice of examples,
    "acceptance": the HMC moves' mean acceptance probability, "n", "seconds" and the
    settings}.

  Raises:
    memory.TooLarge: a call would need more memory than is free (lower num_chains or
      batch_size), before any work.
  """
  _check_sizes(num_intermediate, num_chains, pilot_chains)
  return _run(parts_fn, params, x, key, None, num_intermediate=num_intermediate,
              batch_size=batch_size, progress=progress, stop=stop, what="AIS",
              num_chains=num_chains, start=start, num_leapfrog=num_leapfrog,
              step_size=step_size, target_acceptance=target_acceptance,
              pilot_chains=pilot_chains, resume=resume, on_block=on_block)


def bdmc(parts_fn, params, key, *, num_examples: int, dim: int, num_chains: int = 16,
         num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
         step_size: float = 0.01, target_acceptance: float | None = 0.65,
         pilot_chains: int = 4, batch_size: int = 25, progress: bool = True,
         stop=None, keep=None) -> dict:
  """Bidirectional Monte Carlo on `num_examples` examples simulated from the model
  (`simulate` with `fold_in(key, 0)`): the forward AIS chain's lower bound, the
  reverse chain's upper bound from the exact z, and their gap, which bounds how far
  the forward AIS (with these settings) sits from log p(x) on such data.

  `keep` (an `evaluators.Kept`: result, finish, resume, on_block by name) keeps each
  direction's finished result ("lower", "upper") and an interrupted one's batches, so
  that a rerun continues where this one stopped.

  Returns:
    {"lower": `log_likelihood`'s dict on the simulated data, "upper": the same for
    the reverse chain (its "log_px" a stochastic upper bound; its "mc_stderr" is the
    spread over chains that share their one exact start, a lower bound on its error
    at short schedules), "gap": upper minus lower (nats), "n"}.
  """
  _check_sizes(num_intermediate, num_chains, pilot_chains)
  parts = parts_fn(params)
  x, z = simulate(parts.decoder, parts.prior, jax.random.fold_in(key, 0), num_examples, dim)
  common = dict(num_chains=num_chains, start=start, num_leapfrog=num_leapfrog,
                step_size=step_size, target_acceptance=target_acceptance,
                pilot_chains=pilot_chains, num_intermediate=num_intermediate,
                batch_size=batch_size, progress=progress, stop=stop)

  def direction(name, index, zs, what):
    if keep is not None and keep.result(name) is not None:
      return keep.result(name)
    kept = {} if keep is None else dict(resume=keep.resume(name), on_block=keep.on_block(name))
    result = _run(parts_fn, params, x, jax.random.fold_in(key, index), zs, what=what,
                  **common, **kept)
    if keep is not None:
      keep.finish(name, result)
    return result
  lower = direction("lower", 1, None, "BDMC forward")
  upper = direction("upper", 2, z, "BDMC reverse")
  return {"lower": lower, "upper": upper, "gap": upper["log_px"] - lower["log_px"],
          "n": num_examples}
