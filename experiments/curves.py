r"""Test ELBO against training wall time for several runs, in one plot (docs/results.md's
learning-curve figure).

  python -m experiments.curves \
      --runs="burda_2016 (batch 20; 3^i stages)=runs/burda,burda_2016_fast=runs/burda_fast" \
      --out=docs/burda_curves.png

Each run is LABEL=WORKDIR (its metrics.jsonl). Runs trained with Burda et al.'s
schedule (--lr_schedule=burda) get their stage boundaries (epochs 1, 4, 13, 40,
121, 364, 1093, 3280) marked and numbered. Wall time adds up over resumed
sittings; it is this machine's, so compare runs measured on the same one.
"""

import dataclasses
import pathlib

from experiments import cli
from vae_jax import plots
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting

# Burda et al.'s schedule: stage i (i = 0..7) runs 3^i epochs; these are its ends.
STAGE_ENDS = [sum(3 ** j for j in range(i + 1)) for i in range(8)]


@dataclasses.dataclass(frozen=True)
class CurvesOptions(settings.Settings):
  runs: tuple[str, ...] = setting((), "LABEL=WORKDIR pairs (required).", nonempty=False)
  out: str = setting("docs/learning_curves.png", "The PNG to write.")



def curves(ns) -> None:
  if not ns.curves.runs:
    raise ValueError("runs: give at least one LABEL=WORKDIR, e.g. runs=mine=runs/mnist")
  runs, marks = {}, {}
  for item in ns.curves.runs:
    label, sep, path = item.partition("=")
    if not sep or not label or not path:
      raise ValueError(f"runs: {item!r} is not LABEL=WORKDIR")
    workdir = pathlib.Path(path).expanduser()
    records = workdir_lib.read_metrics(workdir / "metrics.jsonl")
    if not records:
      raise ValueError(f"runs: {workdir} holds no metrics.jsonl records; pass a run's workdir")
    runs[label] = records
    config_path = workdir / "config.json"
    if config_path.exists() and workdir_lib.read_json(config_path).get("lr_schedule") == "burda":
      marks[label] = STAGE_ENDS
  out = pathlib.Path(ns.curves.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  plots.save_time_curves(out, runs, "test ELBO against training time (dots: ends of the "
                         "3^i-epoch stages)" if marks else "test ELBO against training time",
                         marks)


def main(argv: list[str] | None = None) -> int:
  return cli.main(cli.Entry(curves, {"curves": CurvesOptions}), argv)


if __name__ == "__main__":
  cli.run(main)
