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

import dataclasses
import json

from absl import logging

from . import cli
from . import sweep
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import datasets
from vae_jax import estimators
from vae_jax import plots
from vae_jax import runner
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class GradientVarianceOptions(settings.Settings):
  workdir: str = setting("runs/gradvar", "Where the model is trained (if it holds no "
                         "checkpoint) and the results go.")
  Ls: tuple[int, ...] = setting((1, 2, 5, 10, 20, 50), "Sample counts L to compare.", lower=1,
                                nonempty=True)
  repeats: int = setting(200, "Gradient estimates per L and estimator.", lower=2)
  minibatch: int = setting(100, "Test images in the fixed minibatch.", lower=1)



def gradient_variance(ns) -> None:
  opts = ns.gradient_variance
  workdir = sweep.workdir(opts.workdir, "runs/gradvar")
  dataset = datasets.load_for(ns.run, ns.data)
  if not (workdir / "checkpoints").exists():
    runner.train_and_evaluate(ns.run, dataset, workdir)
  config, model, state, epoch = runner.load_run(workdir)
  _, test_x = data_lib.model_inputs(dataset, config.binarize)
  rows = estimators.gradient_variance(model.parts, state.params, test_x[:opts.minibatch],
                                      config.root_key(), list(opts.Ls), opts.repeats)
  for r in rows:
    logging.info("L=%d: total variance %.4g (reparameterization) vs %.4g (score function), "
                 "ratio %.0f", r["L"], r["reparameterization_variance"],
                 r["score_function_variance"], r["variance_ratio"])
  (workdir / "gradient_variance.json").write_text(json.dumps(
      {"epoch": epoch, "minibatch": opts.minibatch, "repeats": opts.repeats, "rows": rows},
      indent=2) + "\n")
  table = workdir_lib.markdown_table(
      ["L", "reparameterization variance", "score-function variance", "ratio",
       "squared norm of the mean gradient"],
      [[r["L"], r["reparameterization_variance"], r["score_function_variance"],
        round(r["variance_ratio"]), r["reparameterization_mean_sq_norm"]] for r in rows], ".4g")
  (workdir / "gradient_variance.md").write_text(table + "\n")
  plots.save_gradient_variance(workdir / "gradient_variance.png", rows,
                               f"encoder gradient variance, model after epoch {epoch}, "
                               f"{opts.minibatch} test images")
  logging.info("Gradient variance:\n%s", table)


ENTRY = cli.Entry(gradient_variance, {"run": config_lib.RunConfig, "data": datasets.DataOptions,
                                     "gradient_variance": GradientVarianceOptions},
                  preset=lambda fv: "gradient_variance")


def main(argv: list[str] | None = None) -> int:
  return cli.main(ENTRY, argv)


if __name__ == "__main__":
  cli.run(main)
