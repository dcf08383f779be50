"""One engine for "a data set in short compiled calls": every evaluation method that
runs longer than a glance (the k-sample bound, AIS, BDMC) is a `Job` that this
engine drives the same way.

Before the work, the job checks a call's memory and times one step on one batch of
rows; the engine then sizes its calls to about `POLL_SECONDS` (how many of the job's
steps a call takes, and, where one call finishes whole rows, how many rows), logs the
expected time, and walks the data set in blocks: each block's rows shared out over
the processes and their sums added up across them, a progress line at most every
`PROGRESS_SECONDS`, the sums so far handed to `on_block` (what an interrupted run
keeps, and `resume` continues from), and a stop request seen after every call (one
process) or every block (several, which must decide together). A job's results are
sums over rows, so blocks, calls, processes and interruptions change no number.
"""

import logging
import math
import time
from typing import Callable, Protocol

import jax
import numpy as np

from vae_jax import labels

POLL_SECONDS = 2.0  # a call's length: a stop request waits at most about this long
PROGRESS_SECONDS = 10.0  # at most a progress line this often


class EvaluationStopped(RuntimeError):
  """The evaluation was asked to stop (a signal) before it finished."""


class Job(Protocol):
  """One method's work on the rows of a data set, as `run` drives it."""

  name: str  # for log lines, e.g. "log p(x), k=5000" or "AIS"
  steps: int  # a batch of rows is this many steps of equal cost (sample chunks, AIS moves)
  grow_rows: bool  # where a call holds all the steps, it may take more rows
  sum_keys: tuple[str, ...]  # the sums `sums` returns; "log_px" among them (the running mean)

  def prepare(self, rows) -> float:
    """Checks a call's memory on `rows` (raises ValueError naming what to lower) and
    returns the seconds one step takes on them (compiling first)."""

  def plan_line(self, n: int, rows: int, unit: float, total: float) -> str:
    """The log line of the expected time: n examples, `unit` seconds a step on `rows`."""

  def sums(self, rows, offset: int, steps_per_call: int, poll: Callable[[], None]) -> dict:
    """{key: float} summed over `rows` (x[offset:offset + len(rows)]), all steps done in
    calls of `steps_per_call`, `poll()` after each call."""

  def summary(self, totals: dict, n: int, seconds: float) -> dict:
    """The method's result from the sums over all n examples."""


def format_duration(seconds: float) -> str:
  """'45s', '12 min' or '3.2 h'."""
  if seconds < 120:
    return f"{seconds:.0f}s"
  return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def timed(fn) -> float:
  """Seconds `fn()` takes (it should block until its work is done)."""
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def call_bytes(compiled) -> int:
  """XLA's count of a compiled call's memory: temporaries, arguments and outputs."""
  stats = compiled.memory_analysis()
  if stats is None:
    return 0
  return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes
             + stats.output_size_in_bytes)


def process_share(n: int) -> tuple[int, int]:
  """The contiguous rows [start, stop) of n that this process evaluates."""
  p, count = jax.process_index(), jax.process_count()
  return n * p // count, n * (p + 1) // count


def sum_over_processes(sums: dict) -> dict:
  """Host floats: `sums` added up over every process (one process: as they are)."""
  sums = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()}
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    sums = {k: multihost_utils.process_allgather(v).sum(0) for k, v in sums.items()}
  return {k: float(v) for k, v in sums.items()}


def _call_sizes(job: Job, unit: float, batch: int, block_size: int) -> tuple[int, int]:
  """(rows, steps) of a call of about `POLL_SECONDS`, from `unit` seconds a step on
  `batch` rows."""
  steps = int(min(job.steps, max(1, POLL_SECONDS // max(unit, 1e-9))))
  rows = batch
  if steps == job.steps and job.grow_rows:  # whole rows fit a call: take more of them
    rows *= int(max(1, POLL_SECONDS // max(unit * job.steps, 1e-9)))
  return max(1, min(rows, block_size)), steps


def run(job: Job, x, *, batch_size: int, block_size: int, progress: bool = True,
        stop: Callable[[], bool] | None = None, resume: dict | None = None,
        on_block: Callable[[dict], None] | None = None) -> dict:
  """`job` over the rows of x `[n, ...]`: its `summary` of the sums over all rows.

  Args:
    job: the method (see `Job`).
    x: the data set's rows: x, or a `labels.Batch(x, labels)` for a conditional model.
    batch_size: rows the job's calls start from (memory); block_size: rows per block.
    progress: log the expected time first, then progress lines.
    stop: polled after each call (one process) or block (several); True raises
      `EvaluationStopped`.
    resume: {"done": n0, "totals": ...} that `on_block` was given by an interrupted
      run of the same job and key: the run continues at row n0 with the same result.
    on_block: called with {"done": rows, "totals": sums} after each block.
  """
  n = labels.num_rows(x)
  batch, block_size = max(1, min(batch_size, n)), max(1, min(block_size, n))
  unit = job.prepare(labels.take(x, 0, batch))
  rows, steps = _call_sizes(job, unit, batch, block_size)
  if progress:
    total = unit * job.steps * -(-n // batch) / jax.process_count()
    logging.info(job.plan_line(n, batch, unit, total))
  one_process = jax.process_count() == 1

  def check_stop(done):
    if stop is not None and stop():
      kept = ("the finished blocks are kept. Run the same command again to continue"
              if on_block is not None else "nothing is kept")
      raise EvaluationStopped(f"{job.name}: stopped after {done} of {n} examples (a signal); "
                              f"{kept}")

  totals, first, t0 = {}, 0, time.perf_counter()
  if resume and not _valid_resume(resume, job, n, block_size):
    logging.warning("%s: the kept blocks are not an earlier run's of this data (%s); "
                    "starting afresh", job.name, str(resume)[:80])
    resume = None
  if resume:
    totals, first = dict(resume["totals"]), int(resume["done"])
    logging.info("%s: continuing after the %d examples an earlier run finished", job.name,
                 first)
  last_line = t0
  for start in range(first, n, block_size):
    stop_at = min(n, start + block_size)
    lo, hi = (start + i for i in process_share(stop_at - start))  # this process's rows
    block = dict.fromkeys(job.sum_keys, 0.0)
    poll = lambda: one_process and check_stop(start)
    for r0 in range(lo, hi, rows):
      for name, value in job.sums(labels.take(x, r0, min(hi, r0 + rows)), r0, steps,
                                  poll).items():
        block[name] += value
    for name, value in (block if one_process else sum_over_processes(block)).items():
      totals[name] = totals.get(name, 0.0) + value
    now = time.perf_counter()
    if progress and (now - last_line >= PROGRESS_SECONDS or stop_at == n):
      last_line, elapsed = now, now - t0
      logging.info("%s: %d/%d examples, running mean %.3f nats, %.0fs, ~%s left", job.name,
                   stop_at, n, totals["log_px"] / stop_at, elapsed,
                   format_duration(elapsed / (stop_at - first) * (n - stop_at)))
    if on_block is not None:
      on_block({"done": stop_at, "totals": dict(totals)})
    if stop_at < n and not one_process:
      check_stop(stop_at)
  return job.summary(totals, n, time.perf_counter() - t0)


def _valid_resume(resume, job: Job, n: int, block_size: int) -> bool:
  """Whether `resume` is what `on_block` gives: whole blocks of the n rows done, below n,
  and a number for each of the job's sums (NaN passes: one AIS chain has no error)."""
  done, totals = resume.get("done"), resume.get("totals")
  return (isinstance(done, int) and not isinstance(done, bool) and 0 < done < n
          and done % block_size == 0 and isinstance(totals, dict)
          and all(isinstance(totals.get(k), (int, float)) and not isinstance(totals.get(k), bool)
                  and not math.isinf(totals[k]) for k in job.sum_keys))


def mean_and_stderr(total: float, sq: float, n: int, ddof: int = 0) -> tuple[float, float]:
  """The mean of n values and its standard error over them (the values' variance with
  `ddof`), from their sum and the sum of their squares (float64 on the host)."""
  mean = total / n
  if n - ddof <= 0:
    return mean, float("nan")
  var = max(sq / n - mean ** 2, 0.0) * n / (n - ddof)
  return mean, math.sqrt(var / n)
