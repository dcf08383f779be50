"""Evaluates a trained run on its whole test set: the ELBO with L = 1 and a large
L, and the importance-sampled log-likelihood (the IWAE bound with k = 5000).

  python -m experiments.evaluate --workdir=runs/mnist

Writes WORKDIR/evaluation.json (nats per image, with standard errors, time and
peak memory) and logs a progress line per block of 1,000 images.
"""

import json
import pathlib

import jax
from absl import flags
from absl import logging

from experiments import common
from vae_jax import data as data_lib
from vae_jax import evaluate
from vae_jax import runner
from vae_jax import train
from vae_jax import workdir as workdir_lib

flags.adopt_module_key_flags(common)

flags.set_default(common.K, 5000)
K = common.K
LARGE_L = flags.DEFINE_integer("large_L", 100, "Samples of z for the second ELBO estimate.",
                               lower_bound=1)
CHUNK = flags.DEFINE_integer("chunk_size", 500, "Importance samples evaluated at once.",
                             lower_bound=1)
IWAE_BATCH = flags.DEFINE_integer("iwae_batch_size", 20, "Images evaluated at once for "
                                  "log p(x); memory grows with this times --chunk_size.",
                                  lower_bound=1)
BLOCK = flags.DEFINE_integer("block_size", 1000, "Images per compiled block: one progress "
                             "line each, and where Ctrl-C stops.", lower_bound=1)
EVAL_SEED = flags.DEFINE_integer("eval_seed", 0, "Key of the evaluation's samples.",
                                 lower_bound=0, upper_bound=2 ** 63 - 1)
EPOCH = flags.DEFINE_integer("epoch", None, "Which checkpoint (default: the latest).")
flags.mark_flag_as_required("workdir")


def run(workdir: pathlib.Path) -> dict:
  config, model, state, epoch = runner.load_run(workdir, EPOCH.value)
  if common.is_primary():  # before the work, not after it
    workdir_lib.check_writable(workdir)
  dataset = common.load_dataset(config.dataset, data_path=config.data_path,
                                tfds_name=config.tfds_name, image_size=config.image_size)
  _, test_x = data_lib.model_inputs(dataset, config.binarize)
  key = jax.random.key(EVAL_SEED.value)
  logging.info("Evaluating %s (epoch %d) on %d test images", workdir, epoch, test_x.shape[0])
  result = {"workdir": str(workdir), "epoch": epoch, "test_examples": int(test_x.shape[0])}
  for name, L in (("elbo_L1", 1), (f"elbo_L{LARGE_L.value}", LARGE_L.value)):
    batch = max(1, min(1000, 20_000 // L))  # about 60 MB of decoder outputs at once
    means = jax.device_get(evaluate.elbo_means(model.parts, state.params, test_x, key,
                                               num_samples=L, estimator=config.estimator,
                                               batch_size=batch))
    result[name] = {k: float(v) for k, v in means.items()}
    logging.info("test ELBO, L=%d: %.3f nats", L, result[name]["elbo"])
  with workdir_lib.StopRequest() as stop:
    ll = evaluate.marginal_log_likelihood(
        model.parts, state.params, test_x, key, num_samples=K.value,
        chunk_size=min(CHUNK.value, K.value), batch_size=IWAE_BATCH.value,
        block_size=BLOCK.value,
        stop=lambda: train.any_process(stop.signal is not None))
  result[f"log_px_k{K.value}"] = ll
  result["peak_memory_mb"] = evaluate.peak_memory_mb()
  logging.info("test log p(x) ~ %.3f nats (k=%d; Monte Carlo s.e. %.4f, over images %.3f), "
               "%.0fs, peak memory %.0f MB", ll["log_px"], K.value, ll["mc_stderr"],
               ll["data_stderr"], ll["seconds"], result["peak_memory_mb"])
  if common.is_primary():
    workdir_lib.write_atomic(workdir / "evaluation.json", json.dumps(result, indent=2) + "\n")
  return result


if __name__ == "__main__":
  # The library's arguments of the log p(x) estimate, as this entry point's flags.
  common.run(lambda: run(common.workdir()),
             flag_of={"batch_size": "iwae_batch_size", "num_samples": "k"})
