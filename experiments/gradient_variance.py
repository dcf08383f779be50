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

import functools
import json

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging

from experiments import common
from vae_jax import estimators
from vae_jax import objectives
from vae_jax import plots
from vae_jax import runner

flags.adopt_module_key_flags(common)

LS = flags.DEFINE_list("Ls", ["1", "2", "5", "10", "20", "50"], "Sample counts L to compare.")
REPEATS = flags.DEFINE_integer("repeats", 200, "Gradient estimates per L and estimator.",
                               lower_bound=2)
MINIBATCH = flags.DEFINE_integer("minibatch", 100, "Test images in the fixed minibatch.",
                                 lower_bound=1)
flags.set_default(common.WORKDIR, "runs/gradvar")
flags.set_default(common.EPOCHS, 2)

OBJECTIVES = {"reparameterization": objectives.elbo,
              "score_function": estimators.score_function_surrogate}


@functools.partial(jax.jit, static_argnames=("model", "objective", "num_samples"))
def _moments(model, objective, params, x, keys, *, num_samples):
  """Sum and sum of squares over keys of the flattened encoder gradient: 2 x [P]."""
  def grad(key):
    def mean_bound(p):
      enc, dec, prior = model.parts(p)
      return objective(enc, dec, x, key, prior=prior, num_samples=num_samples).mean()
    g = jax.grad(mean_bound)(params)
    return jax.flatten_util.ravel_pytree(g["params"]["encoder"])[0]
  def body(acc, key):
    g = grad(key)
    return (acc[0] + g, acc[1] + g * g), None
  size = jax.flatten_util.ravel_pytree(params["params"]["encoder"])[0].size
  zeros = jnp.zeros(size, jnp.float32)
  return jax.lax.scan(body, (zeros, zeros), keys)[0]


def study(model, params, x, key, Ls, repeats):
  rows = []
  for L in Ls:
    row = {"L": L}
    for name, objective in OBJECTIVES.items():
      keys = jax.random.split(jax.random.fold_in(key, L), repeats)
      s, s2 = (np.asarray(a, np.float64) for a in
               _moments(model, objective, params, x, keys, num_samples=L))
      mean = s / repeats
      var = (s2 - repeats * mean ** 2) / (repeats - 1)
      row[f"{name}_variance"] = float(var.sum())
      row[f"{name}_mean_sq_norm"] = float(np.sum(mean ** 2))
    row["variance_ratio"] = row["score_function_variance"] / row["reparameterization_variance"]
    logging.info("L=%d: total variance %.4g (reparameterization) vs %.4g (score function), "
                 "ratio %.0f", L, row["reparameterization_variance"],
                 row["score_function_variance"], row["variance_ratio"])
    rows.append(row)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup()
  workdir = common.workdir()
  try:
    dataset = common.load_dataset("mnist")
    if not (workdir / "checkpoints").exists():
      runner.train_and_evaluate(common.run_config(dataset="mnist"), dataset, workdir)
    config, model, state, epoch = runner.load_run(workdir)
    _, test_x = runner.model_inputs(dataset, config.binarize)
    rows = study(model, state.params, test_x[:MINIBATCH.value], jax.random.key(config.seed),
                 [int(v) for v in LS.value], REPEATS.value)
  except common.USER_ERRORS as e:
    common.fail(str(e))
  (workdir / "gradient_variance.json").write_text(json.dumps(
      {"epoch": epoch, "minibatch": MINIBATCH.value, "repeats": REPEATS.value, "rows": rows},
      indent=2) + "\n")
  lines = ["| L | reparameterization variance | score-function variance | ratio | "
           "squared norm of the mean gradient |", "|---|---|---|---|---|"]
  lines += [f"| {r['L']} | {r['reparameterization_variance']:.4g} | "
            f"{r['score_function_variance']:.4g} | {r['variance_ratio']:.0f} | "
            f"{r['reparameterization_mean_sq_norm']:.4g} |" for r in rows]
  (workdir / "gradient_variance.md").write_text("\n".join(lines) + "\n")
  plots.save_gradient_variance(workdir / "gradient_variance.png", rows,
                               f"encoder gradient variance, model after epoch {epoch}, "
                               f"{MINIBATCH.value} test images")
  logging.info("Gradient variance:\n%s", "\n".join(lines))


if __name__ == "__main__":
  app.run(main)
