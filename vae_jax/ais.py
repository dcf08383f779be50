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
vmapped, each with its own HMC step size, adapted after every move toward
`target_acceptance` (as Wu et al. do). Keys: example j of a data set uses
`fold_in(key, j)`; within an example, `split(key)` gives the start key (chain c
starts from `fold_in(start_key, c)`, the samples `objectives.log_weights` draws
with that key) and the moves' key (move t uses `fold_in(moves_key, t)`), so cutting
the schedule into segments changes no number.
"""

import logging
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions
from vae_jax import evaluate
from vae_jax import multihost
from vae_jax import objectives

STARTS = ("prior", "posterior")
ADAPT_RATE = 0.1  # the step size's adaptation: at most about 6.5% a move


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
             target_acceptance: float | None) -> Chains:
  """One HMC transition per chain leaving f_beta invariant (identity mass, `num_leapfrog`
  leapfrog steps of the chain's step size, a Metropolis test); then, unless
  `target_acceptance` is None, each chain's step size is multiplied by
  exp(ADAPT_RATE (acceptance probability - target)): up to a few percent a move,
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
    step_size = jnp.clip(step_size * jnp.exp(ADAPT_RATE * (prob - target_acceptance)), 1e-4, 10.0)
  return Chains(pick(z, chains.z), pick(lp0, chains.log_p0), pick(lj, chains.log_joint),
                pick(g0, chains.grad_p0), pick(gj, chains.grad_joint), step_size,
                chains.log_weight, chains.accepted + prob)


def anneal(tgt: Target, chains: Chains, betas, moves_key, first_move, *, num_leapfrog: int,
           target_acceptance: float | None) -> Chains:
  """Moves `first_move + 1, ...` of the path: for each pair (beta_prev, beta) of
  `betas` `[S + 1]`, the weight gains (beta - beta_prev) [log p(x, z) - log p0(z)],
  then an HMC move leaves f_beta invariant. Decreasing betas run the reverse chain.
  Move t's key is `fold_in(moves_key, t)` (`first_move` may be traced)."""
  def one(chains, args):
    prev, beta, t = args
    chains = chains._replace(
        log_weight=chains.log_weight + (beta - prev) * (chains.log_joint - chains.log_p0))
    return hmc_move(tgt, chains, beta, jax.random.fold_in(moves_key, t),
                    num_leapfrog=num_leapfrog, target_acceptance=target_acceptance), None

  moves = first_move + 1 + jnp.arange(betas.shape[0] - 1)
  return jax.lax.scan(one, chains, (betas[:-1], betas[1:], moves))[0]


def log_mean_exp_and_stderr(log_w) -> tuple[jax.Array, jax.Array]:
  """log mean_c exp(log_w_c) over the last axis, and its delta-method standard error
  sd(w) / (sqrt(C) mean(w)) (NaN for one chain)."""
  c = log_w.shape[-1]
  lme = jax.nn.logsumexp(log_w, axis=-1) - math.log(c)
  w = jnp.exp(log_w - jnp.max(log_w, axis=-1, keepdims=True))
  se = jnp.std(w, axis=-1, ddof=1) / (math.sqrt(c) * jnp.mean(w, axis=-1)) if c > 1 else (
      jnp.full(lme.shape, jnp.nan))
  return lme, se


class AISResult(NamedTuple):
  """Per example `[batch]`: the estimate (nats), its standard error over the chains
  (delta method), and the chains' mean acceptance probability."""
  log_px: jax.Array
  stderr: jax.Array
  acceptance: jax.Array


def _sampling_prior(prior, dim: int):
  """The prior as a sampler: N(0, I) of `dim` where it was left without a size."""
  if prior is None or (isinstance(prior, distributions.StandardNormal) and prior.dim is None):
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


def _finish(chains: Chains, num_moves: int, reverse: bool) -> AISResult:
  # The reverse chain's weights estimate 1 / p(x): minus their log-mean-exp bounds from above.
  lme, se = log_mean_exp_and_stderr(chains.log_weight)
  acceptance = jnp.mean(chains.accepted) / num_moves
  return AISResult((-lme if reverse else lme)[None], se[None], acceptance[None])


def _over_batch(encoder, decoder, prior, x, z, key, betas, *, num_chains, start, num_leapfrog,
                step_size, target_acceptance) -> AISResult:
  """Every example of x `[batch, ...]` through the whole path of `betas` (from z `[batch,
  dim]` for the reverse chain, else None)."""
  def one(xj, zj, kj):
    tgt, chains = begin(encoder, decoder, prior, xj[None], kj, num_chains=num_chains,
                        start=start, step_size=step_size,
                        z_exact=None if zj is None else zj[None])
    chains = anneal(tgt, chains, betas, moves_key(kj), 0, num_leapfrog=num_leapfrog,
                    target_acceptance=target_acceptance)
    return _finish(chains, betas.shape[0] - 1, reverse=zj is not None)
  keys = objectives.sample_keys(key, 0, x.shape[0])
  out = jax.vmap(one)(x, z, keys)
  return AISResult(*(v[:, 0] for v in out))


def ais(encoder, decoder, x, key, *, prior=None, num_chains: int = 16,
        num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
        step_size: float = 0.01, target_acceptance: float | None = 0.65) -> AISResult:
  """AIS estimates of log p(x) for each example of a batch: a stochastic lower bound.

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
    num_leapfrog, step_size, target_acceptance: the HMC moves (initial step size;
      None: keep it fixed).

  Returns:
    `AISResult`, each field `[batch]`.
  """
  betas = jnp.asarray(sigmoid_schedule(num_intermediate), jnp.float32)
  return _over_batch(encoder, decoder, prior, x, None, key, betas, num_chains=num_chains,
                     start=start, num_leapfrog=num_leapfrog, step_size=step_size,
                     target_acceptance=target_acceptance)


def reverse_ais(encoder, decoder, x, z, key, *, prior=None, num_chains: int = 16,
                num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
                step_size: float = 0.01, target_acceptance: float | None = 0.65) -> AISResult:
  """The reverse chain of BDMC from exact posterior samples z `[batch, dim]` of x
  `[batch, ...]` (simulated data: `simulate`): a stochastic upper bound of log p(x)
  per example. Arguments as for `ais`; every chain of example j starts at z_j."""
  betas = jnp.asarray(sigmoid_schedule(num_intermediate)[::-1].copy(), jnp.float32)
  return _over_batch(encoder, decoder, prior, x, z, key, betas, num_chains=num_chains,
                     start=start, num_leapfrog=num_leapfrog, step_size=step_size,
                     target_acceptance=target_acceptance)


def simulate(decoder, prior, key, num_examples: int, dim: int) -> tuple[jax.Array, jax.Array]:
  """(x, z) ~ p(z) p(x|z): `[n, ...]` data and `[n, dim]` its exact posterior samples.
  Example j draws z from `fold_in(fold_in(key, j), 0)`, x from `fold_in(..., 1)`."""
  p = _sampling_prior(prior, dim)

  def one(k):
    z = p.sample(jax.random.fold_in(k, 0), (1,))
    return decoder(z).sample(jax.random.fold_in(k, 1))[0], z[0]
  return jax.vmap(one)(objectives.sample_keys(key, 0, num_examples))


# -- over a data set: examples in batches, the schedule cut into short compiled calls --

POLL_SECONDS = 2.0  # about this long per compiled call: a stop request is seen that soon


class _Runner:
  """One data set's chains as compiled calls: start a batch of examples, move it through
  a segment of the schedule, read its results."""

  def __init__(self, parts_fn, params, key, betas, *, num_chains, start, num_leapfrog,
               step_size, target_acceptance):
    self.parts_fn, self.params, self.key, self.betas = parts_fn, params, key, betas
    self.moves = len(betas) - 1
    self.opts = dict(num_leapfrog=num_leapfrog, target_acceptance=target_acceptance)
    self.num_chains, self.start, self.step_size = num_chains, start, step_size
    self.reverse = betas[0] > betas[-1]

    def begin_rows(params, xb, keys, zb):
      parts = parts_fn(params)
      def one(xj, kj, zj):
        return begin(parts.encoder, parts.decoder, parts.prior, xj[None], kj,
                     num_chains=num_chains, start=start, step_size=step_size,
                     z_exact=zj[None] if self.reverse else None)[1]
      return jax.vmap(one)(xb, keys, zb)

    def advance(params, xb, keys, chains, betas, first_move):
      parts = parts_fn(params)
      def one(xj, kj, cj):
        tgt = target(parts.encoder, parts.decoder, parts.prior, xj[None], start)
        return anneal(tgt, cj, betas, moves_key(kj), first_move, **self.opts)
      return jax.vmap(one)(xb, keys, chains)

    self.begin = jax.jit(begin_rows)
    self.advance = jax.jit(advance)

  def keys(self, offset, rows):
    return objectives.sample_keys(self.key, offset, rows)

  def segment_betas(self, first_move: int, length: int) -> jax.Array:
    """betas[first_move : first_move + length + 1], the last one repeated past the end
    (moves past T add nothing to the weights)."""
    idx = np.minimum(np.arange(first_move, first_move + length + 1), self.moves)
    return jnp.asarray(self.betas[idx], jnp.float32)

  def run_rows(self, xb, zb, offset, segment: int, poll) -> AISResult:
    """The whole path for rows xb (exact samples zb for the reverse chain)."""
    keys = self.keys(offset, xb.shape[0])
    chains = self.begin(self.params, xb, keys, zb)
    for first in range(0, self.moves, segment):
      chains = self.advance(self.params, xb, keys, chains, self.segment_betas(first, segment),
                            jnp.int32(first))
      poll()
    done = -(-self.moves // segment) * segment
    out = jax.vmap(lambda c: _finish(c, done, self.reverse))(chains)
    return AISResult(*(np.asarray(v[:, 0], np.float64) for v in out))


def _plan_segment(runner: _Runner, xb, zb) -> tuple[int, float]:
  """(moves per call, seconds per move for these rows): a timed probe of a few moves,
  then as many as fill about `POLL_SECONDS`."""
  keys = runner.keys(0, xb.shape[0])
  probe = min(runner.moves, 4)
  chains = runner.begin(runner.params, xb, keys, zb)

  def timed():
    t0 = time.perf_counter()
    jax.block_until_ready(runner.advance(runner.params, xb, keys, chains,
                                         runner.segment_betas(0, probe), jnp.int32(0)))
    return time.perf_counter() - t0

  timed()  # compiles
  unit = min(timed(), timed()) / probe
  return int(min(runner.moves, max(1, POLL_SECONDS // max(unit, 1e-9)))), unit


def _summary(results: list[AISResult], seconds: float, settings: dict) -> dict:
  log_px = np.concatenate([r.log_px for r in results])
  se = np.concatenate([r.stderr for r in results])
  n = len(log_px)
  return {"log_px": float(np.mean(log_px)),
          "mc_stderr": float(np.sqrt(np.nansum(se ** 2)) / n),
          "data_stderr": float(np.std(log_px, ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
          "acceptance": float(np.mean(np.concatenate([r.acceptance for r in results]))),
          "n": n, "seconds": seconds, **settings}


def _run(parts_fn, params, x, key, betas, z, *, batch_size, progress, stop, what, **opts):
  n = x.shape[0]
  runner = _Runner(parts_fn, multihost.local_copy(params), key, betas, **opts)
  batch_size = max(1, min(batch_size, n))
  dummy_z = jnp.zeros((n, 1)) if z is None else z  # the forward chain ignores it
  segment, unit = _plan_segment(runner, x[:batch_size], dummy_z[:batch_size])
  if progress:
    total = unit * runner.moves * -(-n // batch_size)
    logging.info("%s: %d examples x %d chains x %d moves: about %s in all (a move of %d "
                 "examples took %.4fs)", what, n, opts["num_chains"], runner.moves,
                 evaluate.format_duration(total), batch_size, unit)

  def poll(done):
    if stop is not None and stop():
      raise evaluate.EvaluationStopped(f"{what}: stopped after {done} of {n} examples (a "
                                       f"signal); nothing written. Run the same command again "
                                       f"to evaluate")

  results, t0 = [], time.perf_counter()
  for lo in range(0, n, batch_size):
    hi = min(n, lo + batch_size)
    rows, zrows = x[lo:hi], dummy_z[lo:hi]
    if hi - lo < batch_size:  # one shape: pad the last batch, drop its padding after
      pad = batch_size - (hi - lo)
      rows = jnp.concatenate([rows, jnp.repeat(rows[-1:], pad, 0)])
      zrows = jnp.concatenate([zrows, jnp.repeat(zrows[-1:], pad, 0)])
    r = runner.run_rows(rows, zrows, lo, segment, lambda: poll(lo))
    results.append(AISResult(*(v[:hi - lo] for v in r)))
    if progress:
      elapsed = time.perf_counter() - t0
      mean = np.mean(np.concatenate([r.log_px for r in results]))
      logging.info("%s: %d/%d examples, running mean %.3f nats, %.0fs, ~%s left", what, hi, n,
                   mean, elapsed, evaluate.format_duration(elapsed / hi * (n - hi)))
  settings = {"num_chains": opts["num_chains"], "num_intermediate": runner.moves,
              "start": opts["start"], "num_leapfrog": opts["num_leapfrog"],
              "schedule": "sigmoid"}
  return _summary(results, time.perf_counter() - t0, settings)


def log_likelihood(parts_fn, params, x, key, *, num_chains: int = 16,
                   num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
                   step_size: float = 0.01, target_acceptance: float | None = 0.65,
                   batch_size: int = 25, progress: bool = True, stop=None) -> dict:
  """AIS over a data set x `[n, ...]`: the same numbers as `ais` with the same key
  (example j uses `fold_in(key, j)`), computed `batch_size` examples at a time in
  compiled calls of about `POLL_SECONDS`, with the expected time logged first and a
  line per batch. `stop` is polled after each call (raises `evaluate.EvaluationStopped`).

  Returns:
    {"log_px": mean over examples of the per-example AIS estimates (a stochastic
    lower bound, nats), "mc_stderr": its Monte Carlo standard error (the chains'
    delta-method errors combined), "data_stderr": over the choice of examples,
    "acceptance": the HMC moves' mean acceptance probability, "n", "seconds" and the
    settings}.
  """
  betas = sigmoid_schedule(num_intermediate)
  return _run(parts_fn, params, x, key, betas, None, batch_size=batch_size, progress=progress,
              stop=stop, what="AIS", num_chains=num_chains, start=start,
              num_leapfrog=num_leapfrog, step_size=step_size,
              target_acceptance=target_acceptance)


def bdmc(parts_fn, params, key, *, num_examples: int, dim: int, num_chains: int = 16,
         num_intermediate: int = 1000, start: str = "prior", num_leapfrog: int = 10,
         step_size: float = 0.01, target_acceptance: float | None = 0.65,
         batch_size: int = 25, progress: bool = True, stop=None) -> dict:
  """Bidirectional Monte Carlo on `num_examples` examples simulated from the model
  (`simulate` with `fold_in(key, 0)`): the forward AIS chain's lower bound, the
  reverse chain's upper bound from the exact z, and their gap, which bounds how far
  the forward AIS (with these settings) sits from log p(x) on such data.

  Returns:
    {"lower": `log_likelihood`'s dict on the simulated data, "upper": the same for
    the reverse chain (its "log_px" a stochastic upper bound), "gap": upper minus
    lower (nats), "n"}.
  """
  parts = parts_fn(params)
  x, z = simulate(parts.decoder, parts.prior, jax.random.fold_in(key, 0), num_examples, dim)
  common = dict(num_chains=num_chains, start=start, num_leapfrog=num_leapfrog,
                step_size=step_size, target_acceptance=target_acceptance, batch_size=batch_size,
                progress=progress, stop=stop)
  betas = sigmoid_schedule(num_intermediate)
  lower = _run(parts_fn, params, x, jax.random.fold_in(key, 1), betas, None, what="BDMC forward",
               **common)
  upper = _run(parts_fn, params, x, jax.random.fold_in(key, 2), betas[::-1].copy(), z,
               what="BDMC reverse", **common)
  return {"lower": lower, "upper": upper, "gap": upper["log_px"] - lower["log_px"],
          "n": num_examples}
