"""Evaluates a trained run on its whole test set: the ELBO with L = 1 and a large
L, and the importance-sampled log-likelihood (the IWAE bound with k = 5000).

  python -m experiments.evaluate --workdir=runs/mnist

Writes WORKDIR/evaluation.json (nats per image, with standard errors, time and
peak memory), logs the expected time before the k-sample estimate starts and a
progress line per block of 1,000 images; Ctrl-C stops it within seconds.
"""

import dataclasses
import json

import jax
from absl import logging

from experiments import cli
from experiments import cluster
from experiments import sweep
from vae_jax import data as data_lib
from vae_jax import datasets
from vae_jax import evaluate
from vae_jax import multihost
from vae_jax import runner
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
  """What `experiments.evaluate` computes, and with how much memory at once."""
  workdir: str = setting("", "The workdir of the training run to evaluate (required).")
  k: int = setting(5000, "Importance samples of the log p(x) estimate.", lower=1)
  large_L: int = setting(100, "Samples of z for the second ELBO estimate.", lower=1)
  chunk_size: int = setting(500, "Importance samples evaluated at once.", lower=1)
  iwae_batch_size: int = setting(20, "Images evaluated at once for log p(x); memory grows "
                                 "with this times --chunk_size.", lower=1)
  block_size: int = setting(1000, "Images per progress line.", lower=1)
  eval_seed: int = setting(0, "Key of the evaluation's samples.", lower=0, upper=2 ** 63 - 1)
  epoch: int | None = setting(None, "Which checkpoint (default: the latest).", lower=1)

  def __post_init__(self):
    settings.check(self)


def evaluate_run(ns) -> dict:
  opts = ns.evaluate
  if not opts.workdir:
    raise ValueError("workdir='': pass the workdir of a training run, e.g. workdir=runs/mnist")
  workdir = sweep.workdir(opts.workdir, "")
  config, model, state, epoch = runner.load_run(workdir, opts.epoch)
  if jax.process_index() == 0:  # before the work, not after it
    workdir_lib.check_writable(workdir)
  dataset = datasets.load_for(config, ns.data)
  _, test_x = data_lib.model_inputs(dataset, config.binarize)
  key = jax.random.key(opts.eval_seed)
  logging.info("Evaluating %s (epoch %d) on %d test images", workdir, epoch, test_x.shape[0])
  result = {"workdir": str(workdir), "epoch": epoch, "test_examples": int(test_x.shape[0])}
  for name, L in (("elbo_L1", 1), (f"elbo_L{opts.large_L}", opts.large_L)):
    batch = max(1, min(1000, 20_000 // L))  # about 60 MB of decoder outputs at once
    means = jax.device_get(evaluate.elbo_means(model.parts, state.params, test_x, key,
                                               num_samples=L, estimator=config.estimator,
                                               batch_size=batch))
    result[name] = {k: float(v) for k, v in means.items()}
    logging.info("test ELBO, L=%d: %.3f nats", L, result[name]["elbo"])
  with workdir_lib.StopRequest() as stop:
    ll = evaluate.marginal_log_likelihood(
        model.parts, state.params, test_x, key, num_samples=opts.k,
        chunk_size=min(opts.chunk_size, opts.k), batch_size=opts.iwae_batch_size,
        block_size=opts.block_size, stop=lambda: multihost.any_process(stop.signal is not None))
  result[f"log_px_k{opts.k}"] = ll
  result["peak_memory_mb"] = evaluate.peak_memory_mb()
  logging.info("test log p(x) ~ %.3f nats (k=%d; Monte Carlo s.e. %.4f, over images %.3f), "
               "%.0fs, peak memory %.0f MB", ll["log_px"], opts.k, ll["mc_stderr"],
               ll["data_stderr"], ll["seconds"], result["peak_memory_mb"])
  if jax.process_index() == 0:
    workdir_lib.write_atomic(workdir / "evaluation.json", json.dumps(result, indent=2) + "\n")
  return result


# The library's arguments of the log p(x) estimate, as this entry point's flags.
ENTRY = cli.Entry(evaluate_run, {"evaluate": EvaluateOptions, "data": datasets.DataOptions,
                                 "cluster": cluster.ClusterOptions},
                  renames={"batch_size": "iwae_batch_size", "num_samples": "k"})


def main(argv: list[str] | None = None) -> int:
  return cli.main(ENTRY, argv)


if __name__ == "__main__":
  cli.run(main)
