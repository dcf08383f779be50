"""The training commands' body: one run, or a sweep over latent sizes with a summary
table (`--latent_dims=2,5,10`)."""

import csv
import dataclasses
import pathlib

import jax
from absl import logging

from experiments import errors
from vae_jax import datasets
from vae_jax import presets
from vae_jax import runner
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """The settings of a training command that are not the run's."""
  workdir: str | None = setting(None, "Where checkpoints, metrics and pictures go (default: "
                                "runs/<dataset>).")
  preset: str | None = setting(None, "Start from a named configuration (vae_jax/presets.py "
                               "lists each with its command and result); flags given on the "
                               "command line still win.", choices=sorted(presets.PRESETS))
  latent_dims: tuple[int, ...] = setting(
      (), "Sweep: train one model per latent size (e.g. 2,5,10,20,200), each in "
      "WORKDIR/latent_<size>, and write WORKDIR/summary.{csv,md}. Overrides --latent_dim.",
      lower=1, unique=True)
  fresh: bool = setting(False, "Delete the workdir's checkpoints and metrics and start over "
                        "instead of resuming.")
  list_presets: bool = setting(False, "Print every --preset: its name, what it is and its "
                               "measured result; then exit.")

  def __post_init__(self):
    settings.check(self)


def list_presets() -> str:
  """Every preset: its name, what it is, and its measured (or the paper's) result."""
  lines = []
  for name in sorted(presets.PRESETS):
    what, result = presets.describe(name)
    lines.append(f"{name}\n    {what}" + (f"\n    {result}" if result else ""))
  return "\n".join(lines) + "\n\n--preset=NAME starts from one; flags given beside it win."


def workdir(path: str | None, default: str) -> pathlib.Path:
  """`path` (or `default`) with ~ expanded; an empty one refused (it would write into
  the current directory)."""
  path = default if path is None else path
  if not path.strip():
    raise ValueError(f"workdir={path!r}: empty; pass a directory, e.g. workdir=runs/mnist")
  return pathlib.Path(path).expanduser()


def entry(default_preset: str | None = None):
  """The training commands' `cli.Entry`: the run's settings (from --preset, or
  `default_preset`), the data options, these options and the cluster's."""
  from experiments import cli, cluster  # pylint: disable=g-import-not-at-top
  from vae_jax import config  # pylint: disable=g-import-not-at-top
  return cli.Entry(train_main, {"run": config.RunConfig, "data": datasets.DataOptions,
                                "train": TrainOptions, "cluster": cluster.ClusterOptions},
                   preset=lambda fv: fv["preset"].value or default_preset)


def train_main(ns) -> list[dict] | dict:
  """Loads the data set of `ns.run` and trains it (or sweeps `ns.train.latent_dims`)."""
  if ns.train.list_presets:
    print(list_presets())
    return {}
  logging.info("Loading the data set %s", ns.run.dataset)
  dataset = datasets.load_for(ns.run, ns.data)
  return train_all(ns.run, dataset, workdir(ns.train.workdir, f"runs/{ns.run.dataset}"),
                   ns.train.latent_dims, ns.train.fresh)


def train_all(config, dataset, path: pathlib.Path, latent_dims=(), fresh: bool = False):
  """Trains one model, or one per entry of `latent_dims` with a summary table."""
  errors.check_interrupted()
  if not latent_dims:
    return runner.train_and_evaluate(config, dataset, path, fresh=fresh)
  rows = []
  for d in latent_dims:
    logging.info("Sweep: latent_dim=%d", d)
    record = runner.train_and_evaluate(dataclasses.replace(config, latent_dim=d), dataset,
                                       path / f"latent_{d}", fresh=fresh)
    rows.append({"latent_dim": d, **{k: record.get(k) for k in
                                     ("epoch", "train_elbo", "test_elbo", "test_reconstruction",
                                      "test_kl")}})
  write_summary(path, rows)
  return rows


def write_summary(path: pathlib.Path, rows: list[dict]) -> None:
  """summary.csv and summary.md: one row per latent size (process 0 writes them)."""
  if jax.process_index() != 0:
    return
  with open(path / "summary.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  table = workdir_lib.markdown_table(list(rows[0]), [list(r.values()) for r in rows])
  (path / "summary.md").write_text(table + "\n")
  logging.info("Summary (nats per image):\n%s", table)
