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

import json

import jax
from absl import flags
from absl import logging

from experiments import common
from experiments import presets
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import evaluate
from vae_jax import runner
from vae_jax import workdir as workdir_lib

flags.adopt_module_key_flags(common)

ROWS = {
    "vae_1layer": dict(objective="elbo"),
    "iwae_1layer": dict(objective="iwae", iwae_samples=5),
    "vae_2layer": dict(model="two_layer", estimator="monte_carlo"),
    "conv": dict(model="conv", latent_dim=20),
}
PAPER = {"vae_1layer": -86.76, "iwae_1layer": -85.54, "vae_2layer": -85.33, "conv": None}
# A conv decoder costs about 40 times the MLP's per sample: score it on fewer images.
MAX_EVAL = {"conv": 200}
MINUTES = flags.DEFINE_float("minutes", 8.0, "Training wall time of each row.", lower_bound=0.1)
ROW_NAMES = flags.DEFINE_list("rows", ["vae_1layer", "iwae_1layer", "vae_2layer"],
                              f"Which rows, of {list(ROWS)}.")
EVAL_K = flags.DEFINE_integer("eval_k", 5000, "Importance samples of the log p(x) estimate.",
                              lower_bound=1)
EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 2000, "Test images scored with k "
                                     "samples (the first N; 0: all 10,000).", lower_bound=0)
flags.set_default(common.WORKDIR, "runs/table1")


def _config(name: str, epochs: int) -> config_lib.RunConfig:
  base = {**presets.burda_2016_fast(), "epochs": epochs, "warmup_epochs": max(1, epochs // 100),
          "eval_every": max(1, epochs // 10)}
  base["hidden_sizes"] = tuple(int(h) for h in base["hidden_sizes"])
  return config_lib.RunConfig(dataset="mnist", **{**base, **ROWS[name]})


def _epoch_seconds(name: str, dataset, workdir) -> float:
  """Seconds of one compiled epoch of row `name`: the fastest of epochs 2 and 3 of a
  probe (cached in its workdir); the first compiles, and this machine's speed drifts
  (one probe's second epoch took twice the run's median)."""
  runner.train_and_evaluate(_config(name, 3), dataset, workdir / "probe")
  records = workdir_lib.read_metrics(workdir / "probe" / "metrics.jsonl")
  return min(r["epoch_s"] for r in records if r["epoch"] >= 2)


def table1() -> None:
  unknown = [r for r in ROW_NAMES.value if r not in ROWS]
  if unknown:
    raise ValueError(f"--rows: unknown {unknown}; expected some of {list(ROWS)}")
  workdir = common.workdir()
  dataset = common.load_dataset("mnist")
  _, test_x = data_lib.model_inputs(dataset, "dynamic")
  test_x = test_x[:EVAL_EXAMPLES.value or None]
  path = workdir / "table1.json"
  # Rows of earlier invocations stay (each row resumes from its own workdir).
  rows = [r for r in (json.loads(path.read_text()) if path.exists() else [])
          if r["row"] not in ROW_NAMES.value]
  for name in ROW_NAMES.value:
    row_dir = workdir / name
    epoch_s = _epoch_seconds(name, dataset, row_dir)
    epochs = max(2, int(MINUTES.value * 60 / epoch_s))
    logging.info("%s: %.2fs per epoch, %d epochs in %.1f minutes", name, epoch_s, epochs,
                 MINUTES.value)
    record = runner.train_and_evaluate(_config(name, epochs), dataset, row_dir / "run")
    _, model, state, _ = runner.load_run(row_dir / "run")
    ll = evaluate.marginal_log_likelihood(model.parts, state.params,
                                          test_x[:MAX_EVAL.get(name, len(test_x))],
                                          jax.random.key(0), num_samples=EVAL_K.value)
    rows.append({"row": name, "epochs": epochs, "train_minutes": record["wall_s"] / 60,
                 "test_elbo": record["test_elbo"], "log_px": ll["log_px"],
                 "mc_stderr": ll["mc_stderr"], "data_stderr": ll["data_stderr"],
                 "eval_examples": ll["n"], "eval_seconds": ll["seconds"],
                 "paper": PAPER[name]})
    rows.sort(key=lambda r: list(ROWS).index(r["row"]))
    path.write_text(json.dumps(rows, indent=2) + "\n")
  table = workdir_lib.markdown_table(
      ["row", "epochs", "training (min)", "test ELBO (10,000 images)",
       f"log p(x), k = {EVAL_K.value}", "s.e. (Monte Carlo, images)", "test images", "paper"],
      [[r["row"], r["epochs"], f"{r['train_minutes']:.1f}", r["test_elbo"], r["log_px"],
        f"{r['mc_stderr']:.3f}, {r['data_stderr']:.2f}", r["eval_examples"],
        "-" if r["paper"] is None else r["paper"]] for r in rows])
  (workdir / "table1.md").write_text(table + "\n")
  logging.info("Table 1 at %.1f minutes per row:\n%s", MINUTES.value, table)


if __name__ == "__main__":
  common.run(table1)
