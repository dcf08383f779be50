"""Evaluation over a whole data set: padded, masked batches under `lax.map`.

Example j of the data set always uses the key `fold_in(key, j)`, whatever the
batch or chunk sizes, so these only trade memory for speed and never change a
number. The last batch is padded and its padding masked out of the sums, so the
means are exact for any n and each function compiles once per shape. With
several processes, each evaluates its own contiguous share of the examples
(same keys) and the sums are added across processes: the same means as one.
"""

import functools
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import objectives
from vae_jax import train


def _process_share(n: int) -> tuple[int, int]:
  """The contiguous rows [start, stop) of n that this process evaluates."""
  p, count = jax.process_index(), jax.process_count()
  return n * p // count, n * (p + 1) // count


def _sum_over_processes(sums: dict) -> dict:
  """Host floats: `sums` added up over every process (one process: as they are)."""
  sums = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()}
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    sums = {k: multihost_utils.process_allgather(v).sum(0) for k, v in sums.items()}
  return {k: float(v) for k, v in sums.items()}


def _batched_sums(per_example_fn, x, key, batch_size, offset=0):
  """Sums over the rows of x of per_example_fn(x_j [1, ...], fold_in(key, offset + j)),
  whose outputs are dicts of [1] arrays."""
  n = x.shape[0]
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  xb = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
  xb = xb.reshape((num_batches, batch_size, 1) + x.shape[1:])
  index = jnp.arange(num_batches * batch_size).reshape(num_batches, batch_size)

  def one(args):
    xs, idx = args
    keys = jax.vmap(lambda i: jax.random.fold_in(key, offset + i))(idx)
    out = jax.vmap(per_example_fn)(xs, keys)
    return jax.tree_util.tree_map(lambda v: jnp.sum(jnp.where(idx < n, v[:, 0], 0.0)), out)

  sums = jax.lax.map(one, (xb, index))
  return jax.tree_util.tree_map(jnp.sum, sums)


def elbo_means(parts_fn, params, x, key, *, num_samples: int = 1, estimator: str = "analytic",
               batch_size: int = 1000) -> dict:
  """The ELBO and its parts averaged over a data set (shared out over processes).

  Args:
    parts_fn: params -> `objectives.Parts` (e.g. `model.parts`), hashable (static).
    params: its parameters.
    x: `[n, ...]` float32 model inputs (`[n, H, W, C]` images or `[n, D]` vectors).
    key: a `jax.random` key; example j uses `fold_in(key, j)`.
    num_samples: L.
    estimator: "analytic" or "monte_carlo".
    batch_size: rows evaluated at once (memory only; the values do not depend on it).

  Returns:
    {"elbo", "reconstruction", "kl"}: floats, nats per example.
  """
  n = x.shape[0]
  start, stop = _process_share(n)
  params = train.local_copy(params)
  sums = _elbo_sums(parts_fn, params, x[start:stop], key, jnp.int32(start),
                    num_samples=num_samples, estimator=estimator,
                    batch_size=max(1, min(batch_size, stop - start)))
  return {k: v / n for k, v in _sum_over_processes(sums).items()}


@functools.partial(jax.jit, static_argnames=("parts_fn", "num_samples", "estimator",
                                             "batch_size"))
def _elbo_sums(parts_fn, params, x, key, offset, *, num_samples, estimator, batch_size):
  enc, dec, prior = parts_fn(params)
  def fn(xj, k):
    return objectives.elbo_terms(enc, dec, xj, k, prior=prior, num_samples=num_samples,
                                 estimator=estimator)._asdict()
  if x.shape[0] == 0:  # more processes than examples
    return {k: jnp.zeros(()) for k in objectives.ElboTerms._fields}
  return _batched_sums(fn, x, key, batch_size, offset)


@functools.partial(jax.jit, static_argnames=("parts_fn", "num_samples", "chunk_size",
                                             "batch_size"))
def iwae_sums(parts_fn, params, x, key, *, num_samples: int, chunk_size: int = 100,
              batch_size: int = 100, offset=0) -> dict:
  """Sums over rows of the k-sample IWAE bound, its square, and the variances of the
  bounds of k/10-sample and k/2-sample groups (for the error bar).

  Example j uses `fold_in(key, offset + j)`; see `marginal_log_likelihood`.
  """
  enc, dec, prior = parts_fn(params)
  k = num_samples
  groups = min(objectives.STDERR_GROUPS, k)
  sizes = np.asarray([len(range(g, k, groups)) for g in range(groups)], np.float32)

  def fn(xj, kj):
    bound, group_bounds = objectives.iwae_bound_and_groups(
        enc, dec, xj, kj, prior=prior, num_samples=k, chunk_size=chunk_size)
    # Every key always present: the sums are added up across processes by name.
    zero = jnp.zeros_like(bound)
    out = {"log_px": bound, "sq": jnp.square(bound), "var_small": zero, "var_half": zero}
    if groups >= 2:
      out["var_small"] = jnp.var(group_bounds, axis=0, ddof=1)
    if groups == objectives.STDERR_GROUPS and groups % 2 == 0:
      # The two halves (sample i in half i mod 2), from the groups they are made of.
      lse = group_bounds + jnp.log(sizes)[:, None]
      halves = jnp.stack([jax.nn.logsumexp(lse[h::2], axis=0) - np.log(sizes[h::2].sum())
                          for h in (0, 1)])
      out["var_half"] = jnp.var(halves, axis=0, ddof=1)
    return out
  if x.shape[0] == 0:
    return {name: jnp.zeros(()) for name in ("log_px", "sq", "var_small", "var_half")}
  return _batched_sums(fn, x, key, batch_size, offset)


def mc_stderr_of_mean(sums: dict, n: int, num_samples: int) -> tuple[float, float]:
  """(the Monte Carlo standard error of the mean bound over n examples, the rate a
  in Var ~ k^-a it used).

  Batch means with a fitted rate: the variance of a bound from k/10 samples and
  from k/2 samples, each pooled over the examples, give a = log(V_10 / V_2) /
  log 5 (a = 1 where the weights are well behaved; lower where heavy tails make
  small groups miss their large weights); the k-sample variance is then
  V_2 * 2^-a. Plain batch means (a = 1) undershoot the spread over keys on a
  trained MNIST model by half; this fit comes within 20% (tested).
  """
  groups = min(objectives.STDERR_GROUPS, num_samples)
  if groups < 2:
    return float("nan"), float("nan")
  if sums["var_half"] <= 0 or sums["var_small"] <= 0:
    return math.sqrt(sums["var_small"] / groups) / n, 1.0  # plain batch means
  rate = math.log(sums["var_small"] / sums["var_half"]) / math.log(groups / 2)
  rate = min(max(rate, 0.0), 1.0)
  return math.sqrt(sums["var_half"] * 2.0 ** -rate) / n, rate


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


class EvaluationStopped(RuntimeError):
  """The evaluation was asked to stop (a signal) before it finished; nothing was written."""


def available_memory_bytes() -> int | None:
  """Memory free for this process's arrays: the accelerator's free bytes, else the
  host's MemAvailable (Linux); None when unknown."""
  device = jax.local_devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
      return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


# XLA's CPU backend hands dots and their fused neighbours to YNNPACK by default.
# For the k-sample evaluation's decoder (rows = chunk x batch, the weights
# arguments) XLA's own dot emitter is faster: the PyTorch example's k = 5000
# evaluation took half the time without YNNPACK on a 2-core AMD EPYC (README,
# Performance), with the same values. Small training steps run faster with it,
# so the option goes to this computation alone; other backends never see it.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compile_iwae_sums(parts_fn, params, x, key, *, num_samples: int, chunk_size: int,
                      batch_size: int):
  """`iwae_sums` compiled ahead of time for x's shape, called as
  `compiled(params, x, key, offset=jnp.int32(j0))`.

  On a CPU with `CPU_COMPILER_OPTIONS` (an XLA that lacks the option compiles
  without it); elsewhere as `jax.jit` would.
  """
  return compile_with_cpu_options(iwae_sums.lower(
      parts_fn, params, x, key, num_samples=num_samples, chunk_size=chunk_size,
      batch_size=batch_size, offset=jnp.int32(0)))


def compile_with_cpu_options(lowered):
  """`lowered.compile()`, with `CPU_COMPILER_OPTIONS` on a CPU (an XLA that lacks
  the option compiles without it)."""
  if jax.default_backend() == "cpu":
    try:
      return lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)
    except jax.errors.JaxRuntimeError as e:
      if "No such compile option" not in str(e):
        raise
  return lowered.compile()


def _block_bytes(compiled) -> int:
  stats = compiled.memory_analysis()
  if stats is None:
    return 0
  return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes
             + stats.output_size_in_bytes)


def iwae_block_bytes(parts_fn, params, x, key, *, num_samples, chunk_size, batch_size) -> int:
  """XLA's own count of the memory one `iwae_sums` call on `x` needs (temporaries,
  arguments, outputs): what a block of the evaluation costs, for any k."""
  return _block_bytes(compile_iwae_sums(parts_fn, params, x, key, num_samples=num_samples,
                                        chunk_size=chunk_size, batch_size=batch_size))


def marginal_log_likelihood(parts_fn, params, x, key, *, num_samples: int = 5000,
                            chunk_size: int = 500, batch_size: int = 20, block_size: int = 1000,
                            progress: bool = True, stop=None) -> dict:
  """The importance-sampled estimate of log p(x) (the k-sample IWAE bound) over a data set.

  Compiled in blocks of `block_size` examples (one progress line each), each a
  `lax.map` over batches of `batch_size`, each a `lax.map` over chunks of
  `chunk_size` samples: memory is O(batch_size * chunk_size * D) for any k, and
  none of the three sizes changes the result. Before the work starts, XLA's count
  of a block's memory is checked against the free memory, and (with `progress`)
  the memory and the time a first batch took, scaled to the whole, are logged.

  Args:
    parts_fn, params: the VAE (see `elbo_means`).
    x: `[n, ...]` float32 model inputs (`[n, H, W, C]` images or `[n, D]` vectors).
    key: a `jax.random` key.
    num_samples: k (5000 in the papers).
    chunk_size, batch_size, block_size: memory and progress granularity.
    progress: log the estimate and a line per block with the time left.
    stop: a callable polled after each block; when it returns True the evaluation
      raises `EvaluationStopped` (e.g. on SIGINT).

  Returns:
    {"log_px": mean over examples of the bound (nats), "mc_stderr": its Monte
    Carlo standard error (another key; `mc_stderr_of_mean`), "mc_rate": the
    fitted rate a of Var ~ k^-a, "data_stderr": its standard error over the choice of examples, "num_samples",
    "n", "seconds"}.

  Raises:
    ValueError: a block would need more memory than is free (lower chunk_size or
      batch_size).
  """
  n = x.shape[0]
  params = train.local_copy(params)
  chunk_size = min(chunk_size, num_samples)
  block_size = max(1, min(block_size, n))
  first = x[:max(1, min(batch_size, block_size))]
  free = available_memory_bytes()
  compiled = {}  # one executable per block shape (the last block's, a process's share)

  def executable(xs):
    if xs.shape not in compiled:
      compiled[xs.shape] = compile_iwae_sums(parts_fn, params, xs, key, num_samples=num_samples,
                                             chunk_size=chunk_size,
                                             batch_size=max(1, min(batch_size, xs.shape[0])))
    return compiled[xs.shape]

  def run(xs, offset):
    return executable(xs)(params, xs, key, offset=jnp.int32(offset))

  try:
    need = _block_bytes(executable(x[:block_size]))
  except jax.errors.JaxRuntimeError as e:
    if not any(s in str(e) for s in ("RESOURCE_EXHAUSTED", "YNNPACK", "allocat")):
      raise
    need = float("inf")  # XLA could not even plan it
  # Matmul libraries' buffers are outside XLA's count: at least the decoder's
  # outputs for one chunk of one batch, one value per data entry.
  rows = chunk_size * max(1, min(batch_size, block_size))
  need = max(need, 2 * 4 * rows * math.prod(x.shape[1:]))
  if free is not None and need > 0.8 * free:
    raise ValueError(f"the log p(x) estimate needs about {need / 2**30:.2f} GiB per block "
                     f"(chunk_size={chunk_size} samples x batch_size={batch_size} examples), "
                     f"but {free / 2**30:.2f} GiB are free; lower chunk_size or batch_size")
  if progress:
    run_first = lambda: jax.block_until_ready(run(first, 0))
    seconds = _timed(run_first)
    if seconds < 10.0:  # that one compiled: time it again
      seconds = _timed(run_first)
    logging.info("log p(x), k=%d on %d examples: about %.0f MB per block (%.0f MB free), "
                 "about %.0fs in all (timed on %d examples)", num_samples, n, need / 2**20,
                 (free or 0) / 2**20, seconds * n / first.shape[0], first.shape[0])
  totals = {}
  t0 = time.perf_counter()
  for start in range(0, n, block_size):
    stop_at = min(n, start + block_size)
    # Each process takes its own rows of the block.
    lo, hi = (start + i for i in _process_share(stop_at - start))
    sums = _sum_over_processes(run(x[lo:hi], lo))
    for name, value in sums.items():
      totals[name] = totals.get(name, 0.0) + value
    if progress:
      elapsed = time.perf_counter() - t0
      logging.info("log p(x), k=%d: %d/%d examples, running mean %.3f nats, %.0fs, ~%.0fs left",
                   num_samples, stop_at, n, totals["log_px"] / stop_at, elapsed,
                   elapsed / stop_at * (n - stop_at))
    if stop is not None and stop_at < n and stop():
      raise EvaluationStopped(f"stopped after {stop_at} of {n} examples (a signal); nothing "
                              f"written. Run the same command again to evaluate")
  mean = totals["log_px"] / n
  var = max(totals["sq"] / n - mean ** 2, 0.0)
  mc_stderr, rate = mc_stderr_of_mean(totals, n, num_samples)
  return {"log_px": mean, "mc_stderr": mc_stderr, "mc_rate": rate,
          "data_stderr": math.sqrt(var / n), "num_samples": num_samples, "n": n,
          "seconds": time.perf_counter() - t0}


@functools.partial(jax.jit, static_argnames=("parts_fn",))
def encoder_means(parts_fn, params, x) -> jax.Array:
  """The posterior means of a data set: `[n, ...]` -> `[n, Z]`."""
  return parts_fn(params).encoder(x).mean


def peak_memory_mb() -> float:
  """This process's peak resident memory so far, in MB (Linux: ru_maxrss is in kB)."""
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
