r"""Test ELBO against training wall time for several runs, in one plot (docs/results.md's
learning-curve figure).

  python -m experiments.curves \
      --runs="burda_2016 (batch 20; 3^i stages)=runs/burda,burda_2016_fast=runs/burda_fast" \
      --out=docs/burda_curves.png

Each run is WORKDIR (its metrics.jsonl; labelled by its folder's name) or
LABEL=WORKDIR with any label; the PNG goes beside the runs unless --out says where. Runs trained with Burda et al.'s
schedule (--lr_schedule=burda) get their stage boundaries (epochs 1, 4, 13, 40,
121, 364, 1093, 3280) marked and numbered. A run that `experiments.evaluate` scored
gets its log p(x) (the largest k in its evaluation.json) as a star at the end of its
training. --points adds results whose metrics are not at hand (LABEL=MINUTES:NATS, a
square each) and --targets reference values (LABEL=NATS, dashed lines). Wall time adds
up over resumed sittings; it is this machine's, so compare runs measured on the same one.
"""

import dataclasses
import os
import pathlib

from absl import logging

from . import cli
from vae_jax import plots
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting

# Burda et al.'s schedule: stage i (i = 0..7) runs 3^i epochs; these are its ends.
STAGE_ENDS = [sum(3 ** j for j in range(i + 1)) for i in range(8)]


@dataclasses.dataclass(frozen=True)
class CurvesOptions(settings.Settings):
  runs: tuple[str, ...] = setting((), "The runs (required): WORKDIR (labelled by its folder's "
                                  "name) or LABEL=WORKDIR, the label any text.", nonempty=False)
  out: str | None = setting(None, "The PNG to write (default: curves.png in the folder that "
                            "holds the runs).")
  points: tuple[str, ...] = setting((), "LABEL=MINUTES:NATS results without a curve (e.g. "
                                    "an earlier run of record's log p(x)).")
  targets: tuple[str, ...] = setting((), "LABEL=NATS reference values, e.g. a paper's.")


def _pairs(items, what: str, example: str) -> dict:
  """{label: value} of LABEL=VALUE items (value as given)."""
  out = {}
  for item in items:
    label, sep, value = item.rpartition("=")
    if not sep or not label or not value:
      raise ValueError(f"{what}: {item!r} is not LABEL=VALUE, e.g. {example}")
    out[label] = value
  return out


def _numbers(text: str, what: str, count: int) -> tuple[float, ...]:
  try:
    values = tuple(float(v) for v in text.split(":"))
  except ValueError:
    values = ()
  if len(values) != count:
    raise ValueError(f"{what}: {text!r}: expected {count} number(s) separated by ':'")
  return values


def _final_log_px(workdir: pathlib.Path, records: list) -> tuple[float, float, str] | None:
  """(minutes of training, log p(x) with the largest k, "k=K, N images") from the run's
  evaluation.json, where it scored the run's last epoch."""
  path = workdir / "evaluation.json"
  if not path.is_file():
    return None
  scored = workdir_lib.read_json(path)
  ks = [int(k[len("log_px_k"):]) for k in scored if k.startswith("log_px_k")]
  if not ks or scored.get("epoch") != records[-1]["epoch"]:
    return None
  result = scored[f"log_px_k{max(ks)}"]
  return records[-1]["wall_s"] / 60, result["log_px"], f"k={max(ks)}, {result['n']} images"


def _run(item: str) -> tuple[str, pathlib.Path]:
  """(label, workdir) of WORKDIR or LABEL=WORKDIR: the workdir is the part after the
  first "=" that names a folder (a sweep point's folder holds "=" itself)."""
  if pathlib.Path(item).expanduser().is_dir():
    return pathlib.Path(item).name, pathlib.Path(item).expanduser()
  for i, c in enumerate(item):
    if c == "=" and i and pathlib.Path(item[i + 1:]).expanduser().is_dir():
      return item[:i], pathlib.Path(item[i + 1:]).expanduser()
  raise ValueError(f"runs: {item!r} names no folder; give WORKDIR or LABEL=WORKDIR, e.g. "
                   f"runs=mine=runs/mnist")


def curves(ns) -> None:
  if not ns.curves.runs:
    raise ValueError("runs: give at least one LABEL=WORKDIR, e.g. runs=mine=runs/mnist")
  runs, marks, finals, workdirs = {}, {}, {}, []
  for item in ns.curves.runs:
    label, workdir = _run(item)
    workdirs.append(workdir.resolve())
    records = workdir_lib.read_metrics(workdir / "metrics.jsonl")
    if not records:
      raise ValueError(f"runs: {workdir} holds no metrics.jsonl records; pass a run's workdir")
    runs[label] = records
    final = _final_log_px(workdir, records)
    if final is not None:
      finals[label] = final
    config_path = workdir / "config.json"
    if config_path.exists() and workdir_lib.read_json(config_path).get("lr_schedule") == "burda":
      marks[label] = STAGE_ENDS
  # Beside the runs: in the folder that holds them all.
  out = pathlib.Path(ns.curves.out or pathlib.Path(os.path.commonpath(
      [w.parent for w in workdirs])) / "curves.png")
  out.parent.mkdir(parents=True, exist_ok=True)
  points = {k: _numbers(v, "points", 2) for k, v in
            _pairs(ns.curves.points, "points", "mine=43.9:-86.70").items()}
  targets = {k: _numbers(v, "targets", 1)[0] for k, v in
             _pairs(ns.curves.targets, "targets", "paper=-86.76").items()}
  title = "test ELBO" + (" (lines) and log p(x) (markers)" if finals or points else "")
  title += " against training time" + (" (dots: ends of the 3^i-epoch stages)" if marks else "")
  plots.save_time_curves(out, runs, title, marks, finals, points, targets)
  logging.info("Wrote %s", out)


def main(argv: list[str] | None = None) -> int:
  return cli.main(cli.Entry(curves, {"curves": CurvesOptions}), argv)


if __name__ == "__main__":
  cli.run(main)
