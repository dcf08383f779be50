"""Evaluation over a whole data set: padded, masked batches under `lax.map`.

Example j of the data set always uses the key `fold_in(key, j)`, whatever the
batch or chunk sizes, so these only trade memory for speed and never change a
number. The last batch is padded and its padding masked out of the sums, so the
means are exact for any n and each function compiles once per shape. With
several processes, each evaluates its own contiguous share of the examples
(same keys) and the sums are added across processes: the same means as one.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions
from vae_jax import engine
from vae_jax import labels
from vae_jax import memory
from vae_jax import multihost
from vae_jax import objectives


def _padded_batches(x, batch_size: int):
  """x `[n, ...]` (or x and its labels) padded to whole batches, `[batches, batch_size,
  1, ...]`, and the row index of each place, `[batches, batch_size]` (>= n: padding)."""
  n = labels.num_rows(x)
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n

  def batched(a):
    a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
    return a.reshape((num_batches, batch_size, 1) + a.shape[1:])
  xb = jax.tree_util.tree_map(batched, x)
  return xb, jnp.arange(num_batches * batch_size).reshape(num_batches, batch_size)


def _row_keys(key, offset, index):
  """The keys of rows `index` (any shape's last axis): fold_in(key, offset + j)."""
  return jax.vmap(lambda i: jax.random.fold_in(key, offset + i))(index)


def _batched_sums(per_example_fn, x, key, batch_size, offset=0):
  """Sums over the rows of x of per_example_fn(x_j [1, ...], fold_in(key, offset + j)),
  whose outputs are dicts of [1] arrays."""
  n = labels.num_rows(x)
  xb, index = _padded_batches(x, batch_size)

  def one(args):
    xs, idx = args
    out = jax.vmap(per_example_fn)(xs, _row_keys(key, offset, idx))
    return jax.tree_util.tree_map(lambda v: jnp.sum(jnp.where(idx < n, v[:, 0], 0.0)), out)

  sums = jax.lax.map(one, (xb, index))
  return jax.tree_util.tree_map(jnp.sum, sums)


def elbo_means(parts_fn, params, x, key, *, num_samples: int = 1, estimator: str = "analytic",
               batch_size: int = 1000) -> dict:
  """The ELBO and its parts averaged over a data set (shared out over processes).

  Args:
    parts_fn: params -> `objectives.Parts` (e.g. `model.parts`), hashable (static).
    params: its parameters.
    x: `[n, ...]` float32 model inputs (`[n, H, W, C]` images or `[n, D]` vectors), or
      a `labels.Batch(x, labels)` for a conditional model: the bound on log p(x|y).
    key: a `jax.random` key; example j uses `fold_in(key, j)`.
    num_samples: L.
    estimator: "analytic" or "monte_carlo".
    batch_size: rows evaluated at once (memory only; the values do not depend on it).

  Returns:
    {"elbo", "reconstruction", "kl"}: floats, nats per example.
  """
  n = labels.num_rows(x)
  start, stop = engine.process_share(n)
  params = multihost.local_copy(params)
  sums = _elbo_sums(parts_fn, params, labels.take(x, start, stop), key, jnp.int32(start),
                    num_samples=num_samples, estimator=estimator,
                    batch_size=max(1, min(batch_size, stop - start)))
  return {k: v / n for k, v in engine.sum_over_processes(sums).items()}


@functools.partial(jax.jit, static_argnames=("parts_fn", "num_samples", "estimator",
                                             "batch_size"))
def _elbo_sums(parts_fn, params, x, key, offset, *, num_samples, estimator, batch_size):
  bind = labels.binder(parts_fn, params, x)

  def fn(rows, k):
    (enc, dec, prior), xj = bind(rows)
    return objectives.elbo_terms(enc, dec, xj, k, prior=prior, num_samples=num_samples,
                                 estimator=estimator)._asdict()
  if labels.num_rows(x) == 0:  # more processes than examples
    return {k: jnp.zeros(()) for k in objectives.ElboTerms._fields}
  return _batched_sums(fn, x, key, batch_size, offset)


def _batched_rows(per_example_fn, x, key, batch_size, offset):
  """per_example_fn(x_j [1, ...], fold_in(key, offset + j)) for every row j of x,
  batch by batch under `lax.map`: a tuple of `[n, ...]` arrays (its outputs' leading
  axis of 1 dropped)."""
  n = labels.num_rows(x)
  xb, index = _padded_batches(x, batch_size)
  out = jax.lax.map(lambda a: jax.vmap(per_example_fn)(a[0], _row_keys(key, offset, a[1])),
                    (xb, index))
  return tuple(jnp.reshape(v, (index.size,) + v.shape[2:])[:n] for v in out)


@functools.partial(jax.jit, static_argnames=("parts_fn", "num_samples", "chunk_size",
                                             "num_chunks", "batch_size"))
def iwae_log_sums_rows(parts_fn, params, x, key, offset, first_chunk, *, num_samples: int,
                       chunk_size: int, num_chunks: int, batch_size: int):
  """`objectives.iwae_log_sums` of every row of x over chunks first_chunk, ...,
  first_chunk + num_chunks - 1: `[n]` and `[n, G]`. Row j's key is
  `fold_in(key, offset + j)` (offset, first_chunk: traced int32)."""
  bind = labels.binder(parts_fn, params, x)

  def fn(rows, kj):
    (enc, dec, prior), xj = bind(rows)
    lse, lse_groups = objectives.iwae_log_sums(
        enc, dec, xj, kj, prior=prior, num_samples=num_samples, chunk_size=chunk_size,
        first_chunk=first_chunk, num_chunks=num_chunks)
    return lse[0], lse_groups[:, 0]
  return _batched_rows(fn, x, key, batch_size, offset)


def bound_sums(lse: np.ndarray, lse_groups: np.ndarray, num_samples: int) -> dict:
  """From the complete log sums of n examples (`[n]`, `[n, G]`), in float64: the
  sums over examples of the k-sample bound, its square, and the variances of the
  bounds of the G groups (k/G samples each) and of the two halves (sample i in half
  i mod 2) that `mc_stderr_of_mean` takes."""
  lse, lse_groups = np.asarray(lse, np.float64), np.asarray(lse_groups, np.float64)
  k, groups = num_samples, lse_groups.shape[1]
  sizes = np.asarray([len(range(g, k, groups)) for g in range(groups)], np.float64)
  bound = lse - math.log(k)
  out = {"log_px": bound.sum(), "sq": np.square(bound).sum(), "var_small": 0.0,
         "var_half": 0.0}
  if groups >= 2:
    out["var_small"] = np.var(lse_groups - np.log(sizes), axis=1, ddof=1).sum()
  if groups == objectives.STDERR_GROUPS and groups % 2 == 0:
    halves = np.stack([np.logaddexp.reduce(lse_groups[:, h::2], axis=1)
                       - math.log(sizes[h::2].sum()) for h in (0, 1)])
    out["var_half"] = np.var(halves, axis=0, ddof=1).sum()
  return {name: float(v) for name, v in out.items()}


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


# XLA's CPU backend hands dots and their fused neighbours to YNNPACK by default.
# For the k-sample evaluation's decoder (rows = chunk x batch, the weights
# arguments) XLA's own dot emitter is faster: the PyTorch example's k = 5000
# evaluation took half the time without YNNPACK on a 2-core AMD EPYC (docs/performance.md),
# with the same values. Small training steps run faster with it,
# so the option goes to this computation alone; other backends never see it.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compile_iwae_log_sums(parts_fn, params, x, key, *, num_samples: int, chunk_size: int,
                          num_chunks: int, batch_size: int):
  """`iwae_log_sums_rows` compiled ahead of time for x's shape and `num_chunks`,
  called as `compiled(params, x, key, jnp.int32(offset), jnp.int32(first_chunk))`.

  On a CPU with `CPU_COMPILER_OPTIONS` (an XLA that lacks the option compiles
  without it); elsewhere as `jax.jit` would.
  """
  return compile_with_cpu_options(iwae_log_sums_rows.lower(
      parts_fn, params, x, key, jnp.int32(0), jnp.int32(0), num_samples=num_samples,
      chunk_size=chunk_size, num_chunks=num_chunks, batch_size=batch_size))


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


def iwae_block_bytes(parts_fn, params, x, key, *, num_samples, chunk_size, batch_size) -> int:
  """XLA's own count of the memory one call of the k-sample evaluation on `x` needs
  (temporaries, arguments, outputs): O(chunk_size x batch_size), for any k."""
  return engine.call_bytes(compile_iwae_log_sums(parts_fn, params, x, key, num_samples=num_samples,
                                           chunk_size=min(chunk_size, num_samples),
                                           num_chunks=1, batch_size=batch_size))


class _LogPx:
  """The k-sample bound as an `engine.Job`: rows x a range of the k samples' chunks a
  call, one executable per shape, each call's log sums added up per row."""

  sum_keys = ("log_px", "sq", "var_small", "var_half")
  grow_rows = True

  def __init__(self, parts_fn, params, key, num_samples, chunk_size, batch_size,
               what="log p(x)"):
    self.parts_fn, self.params, self.key = parts_fn, params, key
    self.k, self.chunk, self.batch = num_samples, min(chunk_size, num_samples), batch_size
    self.steps = -(-self.k // self.chunk)  # chunks
    self.name = f"{what}, k={self.k}"
    self._compiled, self._need = {}, 0.0

  def executable(self, rows, num_chunks: int):
    shape = (jax.tree_util.tree_map(jnp.shape, rows), num_chunks)
    if shape not in self._compiled:
      self._compiled[shape] = compile_iwae_log_sums(
          self.parts_fn, self.params, rows, self.key, num_samples=self.k,
          chunk_size=self.chunk, num_chunks=num_chunks,
          batch_size=max(1, min(self.batch, labels.num_rows(rows))))
    return self._compiled[shape]

  def call(self, rows, offset: int, first_chunk: int, num_chunks: int):
    return self.executable(rows, num_chunks)(self.params, rows, self.key, jnp.int32(offset),
                                             jnp.int32(first_chunk))

  def prepare(self, rows) -> float:
    """A call's memory checked (XLA's count), then seconds per chunk on `rows`."""
    try:
      need = engine.call_bytes(self.executable(rows, 1))
    except jax.errors.JaxRuntimeError as e:
      if not any(s in str(e) for s in ("RESOURCE_EXHAUSTED", "YNNPACK", "allocat")):
        raise
      need = float("inf")  # XLA could not even plan it
    # Matmul libraries' buffers are outside XLA's count: at least the decoder's
    # outputs for one chunk of one batch, one value per data entry.
    x = labels.inputs(rows)
    self._need = max(need, 2 * 4 * self.chunk * x.shape[0] * math.prod(x.shape[1:]))
    memory.check_fits(self._need, 0.8, f"the log p(x) estimate needs about {{gib}} per call "
                      f"(chunk_size={self.chunk} samples x batch_size={x.shape[0]} "
                      f"examples)", "lower chunk_size or batch_size")
    probe = lambda: jax.block_until_ready(self.call(rows, 0, 0, 1))
    return min(engine.timed(probe), engine.timed(probe))

  def plan_line(self, n: int, rows: int, unit: float, total: float) -> str:
    return (f"{self.name} on {n} examples: about {engine.format_duration(total)} in "
            f"all (a chunk of {self.chunk} samples on {rows} examples took {unit:.3f}s), "
            f"{self._need / 2**20:.0f} MB per call")

  def sums(self, rows, offset: int, steps_per_call: int, poll) -> dict:
    """`bound_sums` of `rows`: their complete log sums, `steps_per_call` chunks a call."""
    lse = lse_groups = None
    for first in range(0, self.steps, steps_per_call):
      part = jax.device_get(self.call(rows, offset, first,
                                      min(steps_per_call, self.steps - first)))
      if lse is None:
        lse, lse_groups = (np.asarray(v, np.float64) for v in part)
      else:
        lse = np.logaddexp(lse, part[0])
        lse_groups = np.logaddexp(lse_groups, part[1])
      poll()
    return bound_sums(lse, lse_groups, self.k)

  def summary(self, totals: dict, n: int, seconds: float) -> dict:
    mean, data_stderr = engine.mean_and_stderr(totals["log_px"], totals["sq"], n)
    mc_stderr, rate = mc_stderr_of_mean(totals, n, self.k)
    return {"log_px": mean, "mc_stderr": mc_stderr, "mc_rate": rate,
            "data_stderr": data_stderr, "num_samples": self.k, "n": n, "seconds": seconds}


def marginal_log_likelihood(parts_fn, params, x, key, *, num_samples: int = 5000,
                            chunk_size: int = 500, batch_size: int = 20, block_size: int = 1000,
                            progress: bool = True, stop=None, resume: dict | None = None,
                            on_block=None) -> dict:
  """The importance-sampled estimate of log p(x) (the k-sample IWAE bound) over a data set.

  Run by `engine.run`: cut into compiled calls of about `engine.POLL_SECONDS` each
  (rows x a range of the k samples' chunks; log sums added up per row on the host),
  each a `lax.map` over batches of `batch_size` and a loop over chunks of
  `chunk_size` samples: memory is O(batch_size * chunk_size * D) for any k, a stop
  request is seen within a call, and none of the sizes changes the result. Before
  the work, a call's memory (XLA's count) is checked against the free memory and one
  chunk is timed: with `progress` the expected time is logged before the first block,
  then a line per block of `block_size` examples (at most every
  `engine.PROGRESS_SECONDS`).

  Args:
    parts_fn, params: the VAE (see `elbo_means`).
    x: `[n, ...]` float32 model inputs (`[n, H, W, C]` images or `[n, D]` vectors), or
      `labels.Batch(x, labels)` for a conditional model: log p(x|y).
    key: a `jax.random` key; example j uses `fold_in(key, j)`, its sample i
      `fold_in(fold_in(key, j), i)`.
    num_samples: k (5000 in the papers).
    chunk_size, batch_size: memory; block_size: examples per block (progress, resume).
    progress: log the expected time and progress lines.
    stop, resume, on_block: see `engine.run` (Ctrl-C; an interrupted run's sums).

  Returns:
    {"log_px": mean over examples of the bound (nats), "mc_stderr": its Monte
    Carlo standard error (another key; `mc_stderr_of_mean`), "mc_rate": the
    fitted rate a of Var ~ k^-a, "data_stderr": its standard error over the
    choice of examples, "num_samples", "n", "seconds"}.

  Raises:
    ValueError: a call would need more memory than is free (lower chunk_size or
      batch_size).
  """
  job = _LogPx(parts_fn, multihost.local_copy(params), key, num_samples, chunk_size, batch_size,
               labels.bound_of(x))
  return engine.run(job, x, batch_size=batch_size, block_size=block_size, progress=progress,
                    stop=stop, resume=resume, on_block=on_block)


@functools.partial(jax.jit, static_argnames=("parts_fn",))
def encoder_means(parts_fn, params, x) -> jax.Array:
  """The posterior means of a data set: `[n, ...]` (or x and its labels) -> `[n, Z]`."""
  parts, x = labels.bind(parts_fn, params, x)
  return parts.encoder(x).mean


@functools.partial(jax.jit, static_argnames=("parts_fn",))
def encoder_moments(parts_fn, params, x) -> tuple[jax.Array, jax.Array]:
  """The means and standard deviations of a diagonal Gaussian posterior over a data
  set: `[n, ...]` (or x and its labels) -> (`[n, Z]`, `[n, Z]`)."""
  parts, x = labels.bind(parts_fn, params, x)
  q = parts.encoder(x)
  if not isinstance(q, distributions.DiagonalGaussian):
    raise ValueError(f"the posterior is a {type(q).__name__}, not a diagonal Gaussian: "
                     f"its moments are not its (mean, logvar)")
  return q.mean, jnp.exp(0.5 * q.logvar)


ACTIVE_UNIT_THRESHOLD = 1e-2  # Burda et al. (2016): u is active when Cov_x(E_q[u|x]) > 10^-2


@functools.partial(jax.jit, static_argnames=("parts_fn",))
def _usage(parts_fn, params, x):
  """The posterior means of the rows of x `[b, Z]` and, for a diagonal Gaussian q and
  an N(0, I) prior, the sum over the rows of each dimension's KL `[Z]` (else None)."""
  parts, x = labels.bind(parts_fn, params, x)
  q = parts.encoder(x)
  mean = q.mean.reshape(x.shape[0], -1)
  prior = distributions.StandardNormal() if parts.prior is None else parts.prior
  kl = distributions.kl_per_dim(q, prior)  # None where the KL has no closed form
  return mean, None if kl is None else jnp.sum(kl.reshape(mean.shape), 0)


def latent_usage(parts_fn, params, x, *, batch_size: int = 1000) -> dict:
  """Which latent dimensions a model uses, over a data set x `[n, ...]` (or x and its
  labels).

  Returns:
    {"active_units": how many dimensions u have Cov_x(E_q[u|x]) above
    `ACTIVE_UNIT_THRESHOLD` (Burda et al., 2016, section 5.2), "unit_variances":
    that variance of each dimension `[Z]`, "kl_per_dim": the mean over x of
    KL(q(u|x) || N(0, 1)) of each dimension `[Z]` (they add up to the closed-form
    KL), or None when q is not a diagonal Gaussian or the prior not N(0, I)}.
  """
  means, kl = [], None
  n = labels.num_rows(x)
  for lo in range(0, n, batch_size):
    m, k = jax.device_get(_usage(parts_fn, params, labels.take(x, lo, lo + batch_size)))
    means.append(np.asarray(m, np.float64))
    if k is not None:
      kl = np.asarray(k, np.float64) + (0.0 if kl is None else kl)
  var = np.concatenate(means).var(0)  # float64 on the host: exact for constant means
  return {"active_units": int(np.sum(var > ACTIVE_UNIT_THRESHOLD)),
          "unit_variances": var.tolist(),
          "kl_per_dim": None if kl is None else (kl / n).tolist()}


def peak_memory_mb() -> float:
  """This process's peak resident memory so far, in MB (Linux: ru_maxrss is in kB)."""
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
