"""One command for a lent accelerator: what a user can expect of our code on it, in one JSON.

  python -m benchmarks.device                         # about 3 minutes on one H200
  python -m benchmarks.device --small --out=/tmp/d.json   # the CPU test's sizes (seconds)

It measures, in one process and in this order (the JSON is rewritten after each
part, so a run cut short keeps what it measured):
  1. the matmul ceilings, float32 (JAX's default precision) and bfloat16;
  2. our compiled epoch against a hand-written plain-JAX `lax.scan` of the same
     model (the PyTorch example's) at batch 20, 128 and 1024, interleaved round by
     round: examples/s, and each one's compile time;
  3. the k = 5000 evaluation (`evaluate.marginal_log_likelihood`, as
     `experiments.evaluate` runs it) of the PyTorch example's model: images/s and
     the decoder's FLOP rate against the float32 ceiling;
  4. bfloat16 against float32 mixed precision (`--compute_dtype`): the
     `burda_2016_fast` preset's model and optimizer for --short_epochs on MNIST, its
     epoch time and test ELBO in each; from the float32 run, the preset's projected
     time to its result (its 1,200 epochs and 120 evaluations);
  5. the conv model (`conv_mnist`): examples/s and compile time.
Speed does not depend on the pixel values: parts 2, 3 and 5 use random binary
images of MNIST's shape; part 4 reads MNIST (`$VAE_JAX_DATA`, else ../shared/data)
and is skipped, with the reason in the JSON, where it is missing.

The batch sizes above 128 and bfloat16 are there for accelerators: on a CPU
bfloat16 matmuls are emulated and slower than float32.
"""

import dataclasses
import datetime
import json
import math
import pathlib
import platform
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from benchmarks import common
from benchmarks.epochs import config_epoch, interleaved, plain_jax_epoch, random_images
from vae_jax import data
from vae_jax import evaluate
from vae_jax import models
from vae_jax import presets
from vae_jax import train
from vae_jax.config import RunConfig

OUT = flags.DEFINE_string("out", "runs/benchmarks/device.json", "Where the JSON goes.")
SMALL = flags.DEFINE_boolean("small", False, "Tiny sizes, for the CPU test: seconds, not "
                             "minutes; the figures mean nothing.")
SHORT_EPOCHS = flags.DEFINE_integer("short_epochs", 20, "Epochs of the bfloat16/float32 runs "
                                    "(part 4).", lower_bound=1)

# (full, small) sizes of each part.
SIZES = {
    "matmul_sizes": ((4096, 8192), (128, 256)),
    "num_examples": (60000, 2048),
    "batch_sizes": ((20, 128, 1024), (20, 128, 1024)),
    "repeats": (3, 1),
    "eval_images": (10000, 16),
    "eval_k": (5000, 40),
    "eval_batch_size": (100, 8),
    "eval_chunk_size": (2500, 20),
    "mnist_train": (None, 2048),  # None: all of it
    "mnist_test": (None, 500),
    "conv_examples": (60000, 512),
}


def _size(name: str):
  full, small = SIZES[name]
  return small if SMALL.value else full


class Report:
  """The JSON of the run, rewritten whole after each part."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    device = jax.devices()[0]
    self.result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"device": device.device_kind, "platform": device.platform,
                    "devices": jax.device_count(), "host": platform.machine(),
                    "jax": jax.__version__},
        "small": SMALL.value}

  def part(self, name: str, fn) -> dict | None:
    """Runs one part, recording its figures, its seconds, or the error that stopped it."""
    t0 = time.perf_counter()
    try:
      value = fn()
    except Exception as e:  # pylint: disable=broad-except  (one part's failure keeps the rest)
      value = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
      print(f"[{name}] failed: {type(e).__name__}: {e}", flush=True)
    self.result[name] = value
    self.result.setdefault("part_seconds", {})[name] = time.perf_counter() - t0
    common.write_json(self.path, self.result)
    print(f"[{name}] {time.perf_counter() - t0:.1f} s: {json.dumps(value)[:2000]}", flush=True)
    return value


def matmul_ceilings() -> dict:
  """The best matmul rate of a few square sizes, float32 and bfloat16, TFLOP/s."""
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    rates = {}
    for n in _size("matmul_sizes"):
      a = jax.random.normal(jax.random.key(0), (n, n), dtype)
      f = jax.jit(lambda a: a @ a)
      t = common.median_time(lambda: f(a), 5)[1]
      rates[n] = 2 * n ** 3 / t / 1e12
    out[jnp.dtype(dtype).name] = {"tflops": max(rates.values()), "by_size": rates}
  return out


def throughput() -> list[dict]:
  """Ours against plain JAX at each batch size: examples/s and compile seconds."""
  n, repeats = _size("num_examples"), _size("repeats")
  images = jnp.asarray(random_images(n))
  rows = []
  for bs in _size("batch_sizes"):
    timed = interleaved({"ours": config_epoch(RunConfig(batch_size=bs), images),
                         "plain": plain_jax_epoch(images, bs)}, repeats)
    examples = (n // bs) * bs
    (ours_first, ours_s), (plain_first, plain_s) = timed["ours"], timed["plain"]
    rows.append({"batch_size": bs, "ours_ex_per_s": examples / ours_s,
                 "plain_jax_ex_per_s": examples / plain_s, "ours_vs_plain_jax": plain_s / ours_s,
                 "ours_compile_s": ours_first - ours_s, "plain_compile_s": plain_first - plain_s})
  return rows


def evaluation(ceilings: dict) -> dict:
  """The k-sample log-likelihood of random weights on random images: its rate."""
  model = presets.pytorch_module()
  params = models.init_params(model, jax.random.key(0))
  n, k = _size("eval_images"), _size("eval_k")
  x = data.to_unit_interval(jnp.asarray(random_images(n).reshape(n, -1)))
  result = evaluate.marginal_log_likelihood(
      model.parts, params, x, jax.random.key(0), num_samples=k,
      batch_size=_size("eval_batch_size"), chunk_size=_size("eval_chunk_size"), progress=False)
  gflops = common.decoder_flops_per_sample(model) * n * k / result["seconds"] / 1e9
  ceiling = (ceilings or {}).get("float32", {}).get("tflops")
  return {"images": n, "k": k, "seconds": result["seconds"], "images_per_s": n / result["seconds"],
          "decoder_tflops": gflops / 1e3,
          "fraction_of_float32_ceiling": gflops / 1e3 / ceiling if ceiling else None,
          "batch_size": _size("eval_batch_size"), "chunk_size": _size("eval_chunk_size")}


def _mnist():
  root = data.default_data_root() / "mnist"
  dataset = data.load_mnist(root)
  train_n, test_n = _size("mnist_train"), _size("mnist_test")
  return dataset._replace(train=dataset.train[:train_n], test=dataset.test[:test_n],
                          test_labels=dataset.test_labels[:test_n])


def precision() -> dict:
  """The fast preset's model and optimizer for --short_epochs in float32 and in bfloat16:
  epoch seconds and the test ELBO; the preset's projected time from the float32 epoch."""
  try:
    dataset = _mnist()
  except (data.DataError, OSError) as e:
    return {"skipped": f"no MNIST: {e}"}
  preset = presets.burda_2016_fast()
  epochs = SHORT_EPOCHS.value
  train_images, test_x = data.model_inputs(dataset, "dynamic")
  train_images = jnp.asarray(train_images)
  rows = {}
  for dtype in ("float32", "bfloat16"):
    config = dataclasses.replace(preset, epochs=epochs, warmup_epochs=max(1, epochs // 100),
                                 compute_dtype=dtype)
    run = config_epoch(config, train_images)
    times = []
    for _ in range(epochs):
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      times.append(time.perf_counter() - t0)
    params, root = run.state().params, config.root_key()
    evaluate_once = lambda: evaluate.elbo_means(run.model.parts, params, test_x,
                                                train.eval_key(root), batch_size=1000)
    eval_first, eval_s = common.median_time(evaluate_once, 2)
    epoch_s = float(np.median(times[1:])) if epochs > 1 else times[0]
    rows[dtype] = {"epoch_s": epoch_s, "ex_per_s": len(train_images) // config.batch_size
                   * config.batch_size / epoch_s, "compile_s": times[0] - epoch_s,
                   "test_elbo": evaluate_once()["elbo"], "eval_s": eval_s,
                   "eval_compile_s": eval_first - eval_s}
  f32 = rows["float32"]
  evaluations = math.ceil(preset.epochs / preset.eval_every)
  return {"epochs": epochs, "batch_size": preset.batch_size, "train_examples": len(train_images),
          "test_examples": len(test_x), **rows,
          "bfloat16_speedup": f32["epoch_s"] / rows["bfloat16"]["epoch_s"],
          "fast_preset": {"epochs": preset.epochs, "evaluations": evaluations,
                          "projected_minutes": (preset.epochs * f32["epoch_s"]
                                                + evaluations * f32["eval_s"]) / 60,
                          "two_core_cpu_minutes": 43.9}}


def conv() -> dict:
  """The conv preset's epoch: examples/s and compile seconds."""
  config = presets.conv_mnist()
  n = _size("conv_examples")
  first, epoch_s = common.median_time(config_epoch(config, jnp.asarray(random_images(n))),
                                      _size("repeats"))
  examples = (n // config.batch_size) * config.batch_size
  return {"batch_size": config.batch_size, "ex_per_s": examples / epoch_s, "epoch_s": epoch_s,
          "compile_s": first - epoch_s}


def main(argv):
  del argv
  report = Report(OUT.value)
  t0 = time.perf_counter()
  print(f"device: {report.result['machine']}", flush=True)
  ceilings = report.part("matmul_ceiling", matmul_ceilings)
  report.part("throughput", throughput)
  report.part("evaluation", lambda: evaluation(ceilings))
  report.part("precision", precision)
  report.part("conv", conv)
  report.result["seconds"] = time.perf_counter() - t0
  common.write_json(report.path, report.result)
  print(summary(report.result))
  print(f"\nWrote {report.path} in {report.result['seconds']:.0f} s")


def summary(r: dict) -> str:
  """The figures as Markdown, for docs/performance.md."""
  lines = [f"{r['machine']['device']} ({r['machine']['platform']}, jax {r['machine']['jax']}), "
           f"{r['date']}:"]
  get = lambda d, *keys: (None if not isinstance(d, dict) else
                          d.get(keys[0]) if len(keys) == 1 else get(d.get(keys[0]), *keys[1:]))
  c = r.get("matmul_ceiling")
  if get(c, "float32"):
    lines.append(f"\nMatmul ceiling: float32 {c['float32']['tflops']:.1f} TFLOP/s, bfloat16 "
                 f"{c['bfloat16']['tflops']:.1f} TFLOP/s\n")
  if isinstance(r.get("throughput"), list):
    lines.append(common.table(
        ["batch", "ours (ex/s)", "plain JAX (ex/s)", "ours / plain", "compile ours (s)",
         "compile plain (s)"],
        [[t["batch_size"], t["ours_ex_per_s"], t["plain_jax_ex_per_s"], t["ours_vs_plain_jax"],
          t["ours_compile_s"], t["plain_compile_s"]] for t in r["throughput"]]))
  e = r.get("evaluation")
  if get(e, "seconds"):
    lines.append(f"\nk = {e['k']} evaluation of {e['images']} images: {e['seconds']:.1f} s "
                 f"({e['images_per_s']:.0f} images/s), decoder {e['decoder_tflops']:.1f} TFLOP/s"
                 + (f" = {e['fraction_of_float32_ceiling']:.2f} of the float32 ceiling"
                    if e["fraction_of_float32_ceiling"] else ""))
  p = r.get("precision")
  if get(p, "float32"):
    lines.append(f"\nburda_2016_fast's model, {p['epochs']} epochs at batch {p['batch_size']}:\n")
    lines.append(common.table(["compute dtype", "epoch (s)", "ex/s", "compile (s)", "test ELBO"],
                              [[d, p[d]["epoch_s"], p[d]["ex_per_s"], p[d]["compile_s"],
                                p[d]["test_elbo"]] for d in ("float32", "bfloat16")]))
    f = p["fast_preset"]
    lines.append(f"\nProjected time of --preset=burda_2016_fast ({f['epochs']} epochs, "
                 f"{f['evaluations']} evaluations): {f['projected_minutes']:.1f} min "
                 f"(two CPU cores: {f['two_core_cpu_minutes']} min)")
  cv = r.get("conv")
  if get(cv, "ex_per_s"):
    lines.append(f"\nconv_mnist: {cv['ex_per_s']:.0f} ex/s at batch {cv['batch_size']} "
                 f"(compile {cv['compile_s']:.1f} s)")
  failed = [k for k, v in r.items() if isinstance(v, dict) and ("error" in v or "skipped" in v)]
  if failed:
    lines.append(f"\nNot measured: {', '.join(failed)} (see the JSON)")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
