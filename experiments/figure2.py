"""The paper's Figure 2: the lower bound against training samples seen, train
and test, for several latent sizes, as one PNG per data set.

  python -m experiments.figure2 --dataset=mnist      # short: 10 epochs per size
  python -m experiments.figure2 --dataset=frey_face
  python -m experiments.figure2 --dataset=mnist --budget=paper   # 10^8 samples

Kingma & Welling's setting: one hidden layer of tanh units (500 for MNIST, 200
for Frey Face), Adagrad with step size 0.02, minibatches of 100, L = 1, the
analytic-KL estimator. Each size trains in WORKDIR/latent_<size> (resumable);
the figure is WORKDIR/figure2_<dataset>.png and the table WORKDIR/summary.md.
"""

import json

from absl import flags

from experiments import common
from vae_jax import plots

flags.adopt_module_key_flags(common)

DATASET = common.DATASET
BUDGET = flags.DEFINE_enum("budget", "short", ["short", "paper"],
                           "short: --epochs as given (default 10 MNIST, 200 Frey Face); "
                           "paper: the paper's 10^8 (MNIST) or 10^7 (Frey Face) samples.")

SETTINGS = {
    "mnist": dict(latent_dims=["3", "5", "10", "20", "200"], hidden_sizes=["500"], epochs=10,
                  workdir="runs/figure2_mnist"),
    "frey_face": dict(latent_dims=["2", "5", "10", "20"], hidden_sizes=["200"], epochs=200,
                      workdir="runs/figure2_frey_face"),
}
PAPER_SAMPLES = {"mnist": 10 ** 8, "frey_face": 10 ** 7}


def figure2() -> None:
  name = DATASET.value
  if name not in SETTINGS:
    raise ValueError(f"--dataset={name}: Figure 2 has {' and '.join(SETTINGS)}")
  common.apply_defaults({**SETTINGS[name], "activation": "tanh", "optimizer": "adagrad",
                         "learning_rate": 0.02, "batch_size": 100})
  dataset = common.load_dataset(name)
  overrides = dict(dataset=name, binarize="dynamic" if name == "mnist" else "none",
                   likelihood="bernoulli" if name == "mnist" else "gaussian_sigmoid_mean")
  if BUDGET.value == "paper":
    steps = len(dataset.train) // common.BATCH_SIZE.value
    overrides["epochs"] = -(-PAPER_SAMPLES[name] // (steps * common.BATCH_SIZE.value))
  workdir = common.workdir()
  common.train_all(common.run_config(**overrides), dataset, workdir)
  curves = {}
  for d in common.LATENT_DIMS.value:
    lines = (workdir / f"latent_{d}" / "metrics.jsonl").read_text().splitlines()
    curves[int(d)] = [json.loads(l) for l in lines]
  path = workdir / f"figure2_{name}.png"
  plots.save_learning_curves(path, curves, f"{name}: lower bound per data point "
                             f"(solid: test, dashed: train)")


if __name__ == "__main__":
  common.run(figure2)
