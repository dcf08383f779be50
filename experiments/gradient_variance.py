"""The variance of the encoder's gradient under the score-function (REINFORCE)
and the reparameterization estimators, as the number of samples L grows.

  python -m experiments.gradient_variance --workdir=runs/gradvar

Takes the latest checkpoint in --workdir (after training the PyTorch example's
model for --epochs there if it holds none), fixes a minibatch of test images,
and for each L draws --repeats independent gradient estimates of the batch-mean
ELBO with respect to the encoder's parameters. Reports the total variance
(trace of the covariance, summed over parameters), the squared norm of the mean
gradient, and their ratio, as WORKDIR/gradient_variance.{md,json,png}.
"""

import json

from absl import flags
from absl import logging

from experiments import common
from vae_jax import data as data_lib
from vae_jax import estimators
from vae_jax import plots
from vae_jax import runner
from vae_jax import workdir as workdir_lib

flags.adopt_module_key_flags(common)

LS = flags.DEFINE_list("Ls", ["1", "2", "5", "10", "20", "50"], "Sample counts L to compare.")
REPEATS = flags.DEFINE_integer("repeats", 200, "Gradient estimates per L and estimator.",
                               lower_bound=2)
MINIBATCH = flags.DEFINE_integer("minibatch", 100, "Test images in the fixed minibatch.",
                                 lower_bound=1)
flags.set_default(common.WORKDIR, "runs/gradvar")
flags.set_default(common.EPOCHS, 2)

def gradient_variance() -> None:
  workdir = common.workdir()
  dataset = common.load_dataset("mnist")
  if not (workdir / "checkpoints").exists():
    runner.train_and_evaluate(common.run_config(dataset="mnist"), dataset, workdir)
  config, model, state, epoch = runner.load_run(workdir)
  _, test_x = data_lib.model_inputs(dataset, config.binarize)
  rows = estimators.gradient_variance(model.parts, state.params, test_x[:MINIBATCH.value],
                                      config.root_key(),
                                      [int(v) for v in LS.value], REPEATS.value)
  for r in rows:
    logging.info("L=%d: total variance %.4g (reparameterization) vs %.4g (score function), "
                 "ratio %.0f", r["L"], r["reparameterization_variance"],
                 r["score_function_variance"], r["variance_ratio"])
  (workdir / "gradient_variance.json").write_text(json.dumps(
      {"epoch": epoch, "minibatch": MINIBATCH.value, "repeats": REPEATS.value, "rows": rows},
      indent=2) + "\n")
  table = workdir_lib.markdown_table(
      ["L", "reparameterization variance", "score-function variance", "ratio",
       "squared norm of the mean gradient"],
      [[r["L"], r["reparameterization_variance"], r["score_function_variance"],
        round(r["variance_ratio"]), r["reparameterization_mean_sq_norm"]] for r in rows], ".4g")
  (workdir / "gradient_variance.md").write_text(table + "\n")
  plots.save_gradient_variance(workdir / "gradient_variance.png", rows,
                               f"encoder gradient variance, model after epoch {epoch}, "
                               f"{MINIBATCH.value} test images")
  logging.info("Gradient variance:\n%s", table)


if __name__ == "__main__":
  common.run(gradient_variance)
