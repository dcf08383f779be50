"""Trains presets with changed settings to the end and scores each the way papers do:
the search behind a time-to-result preset, fastest on an accelerator.

  python -m benchmarks.time_to_result \
      --runs="burda_2016_fast epochs=800;burda_2016_fast epochs=700 batch_size=500"

Each run is a preset (`vae_jax.presets`) with SETTING=VALUE changes, trained as the
runner trains it (`config.build`, one compiled epoch; no evaluation, checkpoint or
picture in between) on MNIST, then scored on the 10,000 test images: the ELBO (L = 1)
and log p(x) (k = 5000, `evaluate.marginal_log_likelihood`). The epoch time is this
device's; multiply the epochs by a CPU epoch's time to project a CPU run. Writes
--out (JSON) after each run and prints a Markdown table.
"""

import dataclasses
import json
import time

import jax
import numpy as np
from absl import app
from absl import flags

from benchmarks import common
from benchmarks.epochs import config_epoch
from vae_jax import data
from vae_jax import evaluate
from vae_jax import presets
from vae_jax import train
from vae_jax.config import RunConfig

RUNS = flags.DEFINE_string("runs", "burda_2016_fast epochs=800", "Runs, ';'-separated: a "
                           "preset's name, then SETTING=VALUE changes.")
K = flags.DEFINE_integer("k", 5000, "Importance samples of log p(x).", lower_bound=1)
TEST = flags.DEFINE_integer("test_examples", 10000, "Test images scored.", lower_bound=1)
TRAIN = flags.DEFINE_integer("train_examples", 60000, "Training images used.", lower_bound=1)
EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", 100, "Images of log p(x) at once (100 "
                                  "suits a GPU; 20 a CPU).", lower_bound=1)
EVAL_CHUNK = flags.DEFINE_integer("eval_chunk_size", 2500, "Samples of log p(x) at once (2500 "
                                  "suits a GPU; 500 a CPU).", lower_bound=1)
OUT = flags.DEFINE_string("out", "runs/benchmarks/time_to_result.json", "Where the JSON goes.")


def parse_run(text: str) -> tuple[str, RunConfig]:
  """'PRESET KEY=VALUE ...' -> (the text, the RunConfig), each value typed as its field."""
  name, *changes = text.split()
  config = presets.get(name)
  types = {f.name: type(getattr(config, f.name)) for f in dataclasses.fields(RunConfig)}
  values = {}
  for change in changes:
    key, sep, value = change.partition("=")
    if not sep or key not in types:
      raise ValueError(f"runs: {change!r} is not SETTING=VALUE of a RunConfig setting")
    if types[key] is tuple:
      values[key] = tuple(int(v) for v in value.split(","))
    elif types[key] is bool:
      values[key] = value.lower() in ("1", "true")
    else:
      values[key] = types[key](value)
  return text, dataclasses.replace(config, **values)


def train_and_score(config: RunConfig, dataset) -> dict:
  """Trains `config` to its last epoch, then scores the test set."""
  train_images, test_x = data.model_inputs(dataset, config.binarize)
  run = config_epoch(config, jax.device_put(train_images))
  times = []
  for _ in range(config.epochs):
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - t0)
  params, root = run.state().params, config.root_key()
  elbo = evaluate.elbo_means(run.model.parts, params, test_x, train.eval_key(root))["elbo"]
  ll = evaluate.marginal_log_likelihood(run.model.parts, params, test_x, jax.random.key(0),
                                        num_samples=K.value, batch_size=EVAL_BATCH.value,
                                        chunk_size=EVAL_CHUNK.value, progress=False)
  return {"epochs": config.epochs, "batch_size": config.batch_size,
          "epoch_s": float(np.median(times[1:] or times)), "train_s": sum(times),
          "test_elbo": float(elbo), "log_px": ll["log_px"], "mc_stderr": ll["mc_stderr"],
          "data_stderr": ll["data_stderr"], "eval_s": ll["seconds"]}


def main(argv):
  del argv
  runs = [parse_run(r) for r in RUNS.value.split(";") if r.strip()]
  dataset = data.load_mnist(data.default_data_root() / "mnist")
  dataset = data.subset(dataset, TRAIN.value, TEST.value)
  result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "k": K.value,
            "runs": []}
  for text, config in runs:
    row = {"run": text, **train_and_score(config, dataset)}
    result["runs"].append(row)
    common.write_json(OUT.value, result)
    print(json.dumps(row), flush=True)
  print(common.table(["run", "epochs", "batch", "epoch (s)", "train (s)", "test ELBO",
                      f"log p(x), k={K.value}", "s.e. (images)"],
                     [[r["run"], r["epochs"], r["batch_size"], r["epoch_s"], r["train_s"],
                       r["test_elbo"], r["log_px"], r["data_stderr"]] for r in result["runs"]]))


if __name__ == "__main__":
  app.run(main)
