r"""Burda et al.'s (2016) Table 1 ordering at an equal budget: each row trains for the
same wall time, then its test log-likelihood is estimated with k = 5000.

  python -m experiments.table1 --minutes=8 --workdir=runs/table1
  python -m experiments.table1 --minutes=8 --rows=vae_1layer,conv --workdir=runs/table1

Rows (all dynamically binarized MNIST, the burda_2016_fast optimizer: batch 250,
Adam 2e-3, b2 = 0.95, warm-up then cosine decay):
  vae_1layer:  784-200-200-50 tanh, ELBO (L = 1)           (paper: -86.76)
  iwae_1layer: the same model, IWAE bound with k = 5         (paper: -85.54)
  vae_2layer:  two stochastic layers (100, 50), ELBO (A)     (paper: -85.33)
  conv:        the conv VAE (32, 64 channels; 20 latent), ELBO
A three-epoch probe measures each row's compiled epoch time (the faster of epochs 2, 3);
the row then trains for as many epochs as fit in --minutes (its schedule spans exactly
those). The table (WORKDIR/table1.md and .json) gives epochs, wall time, test ELBO and
log p(x) with its standard errors, all rows scored on the same test images. Rows resume
from their checkpoints: run the same command again after a stop.
"""

import dataclasses
import json

import jax
from absl import logging

from . import cli
from . import sweep
from vae_jax import data as data_lib
from vae_jax import datasets
from vae_jax import evaluate
from vae_jax import presets
from vae_jax import runner
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting

PAPER = {"vae_1layer": -86.76, "iwae_1layer": -85.54, "vae_2layer": -85.33, "conv": None}
# A conv decoder costs about 40 times the MLP's per sample: score it on fewer images.
MAX_EVAL = {"conv": 200}


@dataclasses.dataclass(frozen=True)
class Table1Options(settings.Settings):
  workdir: str = setting("runs/table1", "Each row trains in WORKDIR/<row>; the table goes to "
                         "WORKDIR/table1.{md,json}.")
  minutes: float = setting(8.0, "Training wall time of each row.", lower=0.01)
  rows: tuple[str, ...] = setting(("vae_1layer", "iwae_1layer", "vae_2layer"), "Which rows, of "
                                  f"{list(presets.TABLE1_ROWS)}.", choices=presets.TABLE1_ROWS,
                                  nonempty=True, unique=True)
  eval_k: int = setting(5000, "Importance samples of the log p(x) estimate.", lower=1)
  eval_examples: int = setting(2000, "Test images scored with k samples (the first N; 0: all "
                               "10,000).", lower=0)



def _epoch_seconds(name: str, dataset, workdir) -> float:
  """Seconds of one compiled epoch of row `name`: the fastest of epochs 2 and 3 of a
  probe (cached in its workdir); the first compiles, and this machine's speed drifts
  (one probe's second epoch took twice the run's median)."""
  runner.train_and_evaluate(presets.table1_row(name, 3), dataset, workdir / "probe")
  records = workdir_lib.read_metrics(workdir / "probe" / "metrics.jsonl")
  return min(r["epoch_s"] for r in records if r["epoch"] >= 2)


def table1(ns) -> None:
  opts = ns.table1
  workdir = sweep.workdir(opts.workdir, "runs/table1")
  dataset = datasets.load_for(presets.table1_row("vae_1layer", 1), ns.data)
  _, test_x = data_lib.model_inputs(dataset, "dynamic")
  test_x = test_x[:opts.eval_examples or None]
  path = workdir / "table1.json"
  # Rows of earlier invocations stay (each row resumes from its own workdir).
  rows = [r for r in (json.loads(path.read_text()) if path.exists() else [])
          if r["row"] not in opts.rows]
  for name in opts.rows:
    row_dir = workdir / name
    epoch_s = _epoch_seconds(name, dataset, row_dir)
    epochs = max(2, int(opts.minutes * 60 / epoch_s))
    logging.info("%s: %.2fs per epoch, %d epochs in %.1f minutes", name, epoch_s, epochs,
                 opts.minutes)
    record = runner.train_and_evaluate(presets.table1_row(name, epochs), dataset, row_dir / "run")
    _, model, state, _ = runner.load_run(row_dir / "run")
    ll = evaluate.marginal_log_likelihood(model.parts, state.params,
                                          test_x[:MAX_EVAL.get(name, len(test_x))],
                                          jax.random.key(0), num_samples=opts.eval_k)
    rows.append({"row": name, "epochs": epochs, "train_minutes": record["wall_s"] / 60,
                 "test_elbo": record["test_elbo"], "log_px": ll["log_px"],
                 "mc_stderr": ll["mc_stderr"], "data_stderr": ll["data_stderr"],
                 "eval_examples": ll["n"], "eval_seconds": ll["seconds"],
                 "paper": PAPER[name]})
    rows.sort(key=lambda r: presets.TABLE1_ROWS.index(r["row"]))
    path.write_text(json.dumps(rows, indent=2) + "\n")
  table = workdir_lib.markdown_table(
      ["row", "epochs", "training (min)", "test ELBO (10,000 images)",
       f"log p(x), k = {opts.eval_k}", "s.e. (Monte Carlo, images)", "test images", "paper"],
      [[r["row"], r["epochs"], f"{r['train_minutes']:.1f}", r["test_elbo"], r["log_px"],
        f"{r['mc_stderr']:.3f}, {r['data_stderr']:.2f}", r["eval_examples"],
        "-" if r["paper"] is None else r["paper"]] for r in rows])
  (workdir / "table1.md").write_text(table + "\n")
  logging.info("Table 1 at %.1f minutes per row:\n%s", opts.minutes, table)


ENTRY = cli.Entry(table1, {"table1": Table1Options, "data": datasets.DataOptions})


def main(argv: list[str] | None = None) -> int:
  return cli.main(ENTRY, argv)


if __name__ == "__main__":
  cli.run(main)
