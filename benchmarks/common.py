"""Timing helpers and FLOP counts shared by the benchmarks."""

import json
import math
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from vae_jax import evaluate
from vae_jax import models
from vae_jax import workdir


def median_time(fn, repeats: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` calls after it).

  The first call compiles; it is reported apart and never in the median.
  """
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def matmul_ceiling(repeats: int = 5, sizes=(1024, 2048, 3072)) -> dict:
  """The machine's float32 matmul rate: the best of a few large square `jnp.dot`s,
  each compiled as `jax.jit` does and (on a CPU) with the k-sample evaluation's
  compiler options, so no ratio against it gains from a slower reference."""
  best = {}
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    lowered = jax.jit(lambda a: a @ a).lower(a)
    compiled = [lowered.compile(), evaluate.compile_with_cpu_options(lowered)]
    t = min(median_time(lambda: f(a), repeats)[1] for f in compiled)
    best[n] = 2 * n ** 3 / t / 1e9
  return {"gflops": max(best.values()), "by_size": best}


def train_flops_per_example(model, num_samples: int = 1) -> float:
  """Matmul FLOPs of one training step per example, counted from the layer sizes.

  Forward: 2 * (multiply-adds) per layer, the decoder once per sample of z.
  Backward: twice the forward (gradients of weights and of inputs), less the
  input gradient of the encoder's first layer, which nothing needs.
  """
  enc = [model.input_dim, *model.hidden_sizes, 2 * model.latent_dim]
  dec = [model.latent_dim, *model.hidden_sizes[::-1], model.input_dim]
  macs = lambda sizes: sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
  forward = 2 * (macs(enc) + num_samples * macs(dec))
  return 3 * forward - 2 * enc[0] * enc[1]


def decoder_flops_per_sample(model) -> float | None:
  """Matmul FLOPs of one decoder pass of an MLP `models.VAE` (or the runner's
  `LinenModel` of one; 2 per multiply-add); None for other models."""
  if isinstance(model, models.LinenModel):
    model = model.module
  if not isinstance(model, models.VAE):
    return None
  dec = [model.latent_dim, *model.hidden_sizes[::-1], math.prod(model.event_shape)]
  return 2.0 * sum(a * b for a, b in zip(dec[:-1], dec[1:]))


def write_json(path, result: dict) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=2) + "\n")


def table(header: list[str], rows: list[list]) -> str:
  """A Markdown table, three significant digits."""
  return workdir.markdown_table(header, rows, ".3g")
