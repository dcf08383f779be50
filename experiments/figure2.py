"""The paper's Figure 2: the lower bound against training samples seen, train
and test, for several latent sizes, as one PNG per data set.

  python -m experiments.figure2 --dataset=mnist      # short: 10 epochs per size
  python -m experiments.figure2 --dataset=frey_face
  python -m experiments.figure2 --dataset=mnist --budget=paper   # 10^8 samples

Kingma & Welling's setting, the presets figure2_mnist and figure2_frey_face
(vae_jax/presets.py): one hidden layer of tanh units (500 for MNIST, 200 for Frey
Face), Adagrad with step size 0.02, minibatches of 100, L = 1, the analytic-KL
estimator. Each size trains in WORKDIR/latent_<size> (resumable); the figure is
WORKDIR/figure2_<dataset>.png and the table WORKDIR/summary.md.
"""

import dataclasses
import json

from . import cli
from . import cluster
from . import sweep
from vae_jax import config as config_lib
from vae_jax import datasets
from vae_jax import plots
from vae_jax import settings
from vae_jax.settings import setting

LATENT_DIMS = {"mnist": (3, 5, 10, 20, 200), "frey_face": (2, 5, 10, 20)}
PAPER_SAMPLES = {"mnist": 10 ** 8, "frey_face": 10 ** 7}


@dataclasses.dataclass(frozen=True)
class Figure2Options(settings.Settings):
  budget: str = setting("short", "short: --epochs as given (default 10 MNIST, 200 Frey Face); "
                        "paper: the paper's 10^8 (MNIST) or 10^7 (Frey Face) samples.",
                        choices=("short", "paper"))



def figure2(ns) -> None:
  name, config = ns.run.dataset, ns.run
  if name not in LATENT_DIMS:
    raise ValueError(f"dataset={name}: Figure 2 has {' and '.join(LATENT_DIMS)}")
  dataset = datasets.load_for(config, ns.data)
  if ns.figure2.budget == "paper":
    steps = len(dataset.train) // config.batch_size
    config = dataclasses.replace(
        config, epochs=-(-PAPER_SAMPLES[name] // (steps * config.batch_size)))
  workdir = sweep.workdir(ns.train.workdir, f"runs/figure2_{name}")
  latent_dims = ns.train.latent_dims or LATENT_DIMS[name]
  points = sweep.grid(config, [f"latent_dim={','.join(map(str, latent_dims))}"])
  sweep.train_points(config, dataset, workdir, points, fresh=ns.train.fresh)
  curves = {}
  for d, p in zip(latent_dims, points):
    lines = (workdir / p.name / "metrics.jsonl").read_text().splitlines()
    curves[d] = [json.loads(l) for l in lines]
  plots.save_learning_curves(workdir / f"figure2_{name}.png", curves,
                             f"{name}: lower bound per data point (solid: test, dashed: train)")


ENTRY = cli.Entry(figure2, {"run": config_lib.RunConfig, "data": datasets.DataOptions,
                            "train": sweep.TrainOptions, "figure2": Figure2Options,
                            "cluster": cluster.ClusterOptions},
                  preset=lambda fv: fv["preset"].value or f"figure2_{fv['dataset'].value}")


def main(argv: list[str] | None = None) -> int:
  return cli.main(ENTRY, argv)


if __name__ == "__main__":
  cli.run(main)
