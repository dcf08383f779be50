"""How often the k-sample estimate's reported 95% interval covers its own expectation.

  python -m benchmarks.coverage --workdir=runs/mnist --keys=200 --k=5000

One trained run, the first --num_examples binarized test images, the estimate of
`experiments.evaluate` (`evaluate.marginal_log_likelihood`) under --keys different
keys. The truth is the mean of the estimates over the keys (the estimator's
expectation, its own standard error printed beside it); a key's interval is its
estimate +- 1.96 times its reported Monte Carlo standard error. Writes --out (JSON).
"""

import jax
import numpy as np
from absl import app
from absl import flags

from benchmarks import common
from vae_jax import data
from vae_jax import evaluate
from vae_jax import runner

WORKDIR = flags.DEFINE_string("workdir", "runs/mnist", "The trained run.")
K = flags.DEFINE_integer("k", 5000, "Importance samples per image.", lower_bound=2)
KEYS = flags.DEFINE_integer("keys", 200, "Independent estimates.", lower_bound=3)
NUM = flags.DEFINE_integer("num_examples", 100, "Test images.", lower_bound=1)
OUT = flags.DEFINE_string("out", "runs/benchmarks/coverage.json", "Where the JSON goes.")


def coverage(estimates: np.ndarray, stderrs: np.ndarray, z: float = 1.96) -> dict:
  """The share of intervals estimate +- z * stderr (`[K]` each) that hold the mean of
  the estimates, the spread of the estimates (s.d. over keys) and the reported errors
  against it."""
  truth = float(np.mean(estimates))
  spread = float(np.std(estimates, ddof=1))
  return {"truth": truth, "truth_stderr": spread / np.sqrt(len(estimates)),
          "coverage": float(np.mean(np.abs(estimates - truth) <= z * stderrs)),
          "spread": spread, "stderr_mean": float(np.mean(stderrs)),
          "stderr_min": float(np.min(stderrs)), "stderr_max": float(np.max(stderrs)),
          "keys": len(estimates)}


def main(argv):
  del argv
  config, model, state, _ = runner.load_run(WORKDIR.value)
  mnist = data.load_mnist(data.default_data_root() / "mnist")
  x = data.model_inputs(mnist, config.binarize)[1][:NUM.value]  # as experiments.evaluate
  results = [evaluate.marginal_log_likelihood(model.parts, state.params, x, jax.random.key(s),
                                              num_samples=K.value, progress=False)
             for s in range(KEYS.value)]
  out = coverage(np.asarray([r["log_px"] for r in results]),
                 np.asarray([r["mc_stderr"] for r in results]))
  out.update(k=K.value, num_examples=len(x), workdir=WORKDIR.value,
             mc_rate_mean=float(np.mean([r["mc_rate"] for r in results])))
  common.write_json(OUT.value, out)


if __name__ == "__main__":
  app.run(main)
