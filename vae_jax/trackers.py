"""Experiment trackers as loop actions: MLflow and Weights & Biases.

`make(name, settings)` gives the action a run's `tracker` setting names ("mlflow",
"wandb"; "none": none). At the run's start it opens a tracked run (or, for a resumed
run, the same one again: its id is kept in the workdir's `trackers.json`) with the
settings as parameters; after each evaluated epoch it logs the epoch's figures
(metrics.jsonl's numbers) at the epoch as step; at the last epoch the pictures too.
`log_evaluation` adds `experiments.evaluate`'s figures to the same tracked run. A
tracker that fails says so in one warning line and is dropped: training goes on.

MLflow (`pip install -e ".[mlflow]"`): `MLFLOW_TRACKING_URI` when set, else a local
SQLite store beside the run folders (`RUNS/mlflow.db`, artifacts in `RUNS/mlartifacts`;
no server). W&B (`pip install -e ".[wandb]"`): the project "vae-jax", files under the
workdir; offline (nothing leaves the machine, `wandb sync` sends it later) unless
`WANDB_MODE` or `WANDB_API_KEY` says otherwise.
"""

import contextlib
import importlib.util
import json
import logging
import os
import pathlib
import secrets
import time

from vae_jax import multihost
from vae_jax import workdir as workdir_lib

TRACKERS = ("none", "mlflow", "wandb")
STATE_FILE = "trackers.json"
PICTURES = ("reconstructions.png", "samples.png", "manifold.png", "latent_means.png")
PROJECT = "vae-jax"  # MLflow's experiment and W&B's project


def _figures(record: dict) -> dict:
  """The numbers of a metrics line (not the epoch, lists or flags)."""
  return {k: float(v) for k, v in record.items()
          if k not in ("epoch", "step") and isinstance(v, (int, float))
          and not isinstance(v, bool)}


@contextlib.contextmanager
def _quiet(*names: str):
  """The loggers `names` at WARNING for the body (a library's INFO chatter)."""
  loggers = [logging.getLogger(n) for n in names]
  levels = [l.level for l in loggers]
  for l in loggers:
    l.setLevel(logging.WARNING)
  try:
    yield
  finally:
    for l, level in zip(loggers, levels):
      l.setLevel(level)


class _MLflow:
  """One tracked MLflow run through `MlflowClient` (no global state)."""

  def __init__(self, workdir: pathlib.Path, kept: dict | None, settings: dict | None):
    from mlflow.entities import Param  # pylint: disable=g-import-not-at-top
    from mlflow.tracking import MlflowClient  # pylint: disable=g-import-not-at-top
    runs = workdir.resolve().parent
    uri = (kept or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{runs / 'mlflow.db'}")
    with _quiet("mlflow", "alembic"):  # a new store's table creation, line by line
      self.client = MlflowClient(tracking_uri=uri)
      if kept and kept.get("run_id"):
        self.run_id = kept["run_id"]
        self.client.update_run(self.run_id, status="RUNNING")
      else:
        exp = self.client.get_experiment_by_name(PROJECT)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            PROJECT, artifact_location=(runs / "mlartifacts").as_uri()
            if uri.startswith("sqlite:") else None)
        self.run_id = self.client.create_run(exp_id, run_name=workdir.name).info.run_id
        params = [Param(k, json.dumps(v)[:6000]) for k, v in (settings or {}).items()]
        self.client.log_batch(self.run_id, params=params)
    self.state = {"tracking_uri": uri, "run_id": self.run_id}

  def log(self, figures: dict, step: int) -> None:
    from mlflow.entities import Metric  # pylint: disable=g-import-not-at-top
    now = int(time.time() * 1000)
    self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step)
                                                for k, v in figures.items()])

  def pictures(self, paths: list, step: int) -> None:
    del step
    for p in paths:
      self.client.log_artifact(self.run_id, str(p))

  def close(self) -> None:
    self.client.set_terminated(self.run_id)


class _WandB:
  """One tracked W&B run, resumed by its id."""

  def __init__(self, workdir: pathlib.Path, kept: dict | None, settings: dict | None):
    import wandb  # pylint: disable=g-import-not-at-top
    self.wandb = wandb
    mode = os.environ.get("WANDB_MODE") or (
        "online" if os.environ.get("WANDB_API_KEY") else "offline")
    run_id = (kept or {}).get("id") or secrets.token_hex(4)  # W&B's ids: 8 lowercase characters
    self.run = wandb.init(project=PROJECT, dir=str(workdir), id=run_id, resume="allow",
                          name=workdir.name, mode=mode, config=settings,
                          settings=wandb.Settings(silent=True, console="off"))
    self.state = {"id": run_id}

  def log(self, figures: dict, step: int) -> None:
    self.run.log(figures, step=step)

  def pictures(self, paths: list, step: int) -> None:
    self.run.log({pathlib.Path(p).stem: self.wandb.Image(str(p)) for p in paths}, step=step)

  def close(self) -> None:
    self.run.finish()


_KINDS = {"mlflow": _MLflow, "wandb": _WandB}


class _Failed:
  """What `_guarded` returns when the tracker failed (said in one warning line)."""


FAILED = _Failed()


def _guarded(name: str, what: str, fn, *args):
  """fn(*args), or `FAILED` and one warning line if the tracker fails."""
  try:
    return fn(*args)
  except Exception as e:  # pylint: disable=broad-except  (a tracker never stops a run)
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    logging.warning("tracker %s: %s failed (%s: %s); the run goes on without it", name, what,
                    type(e).__name__, first)
    return FAILED


def _open(name: str, workdir: pathlib.Path, settings: dict | None):
  """The tracker `name` on the workdir's tracked run (a new one if it has none)."""
  state = workdir_lib.read_json(workdir / STATE_FILE) if (workdir / STATE_FILE).is_file() else {}
  tracker = _guarded(name, "opening its run", _KINDS[name], workdir, state.get(name), settings)
  if tracker is FAILED:
    return None
  if state.get(name) != tracker.state:
    workdir_lib.write_atomic(workdir / STATE_FILE,
                             json.dumps({**state, name: tracker.state}, indent=2) + "\n")
  return tracker


class Tracker:
  """The loop action of one tracker (see the module's docstring). Process 0 only."""

  def __init__(self, name: str, settings: dict):
    if name not in _KINDS:
      raise ValueError(f"tracker={name}: expected one of {list(TRACKERS)}")
    if importlib.util.find_spec(name) is None:  # before the run starts, not at its end
      raise ValueError(f"tracker={name}: {name} is not installed; pip install -e "
                       f"\".[{name}]\" (or pip install {name})")
    self.name, self.settings, self.tracker = name, settings, None

  def on_start(self, loop) -> bool:
    if multihost.is_primary():
      self.tracker = _open(self.name, loop.workdir, self.settings)
    return False  # never stops the run

  def __call__(self, loop, end) -> bool:
    if self.tracker is None or loop.record.get("epoch") != end.epoch:
      return False  # not evaluated this epoch (or no tracker)
    if _guarded(self.name, "logging", self.tracker.log, _figures(loop.record),
                end.epoch) is FAILED:
      self.tracker = None  # said once; the run goes on untracked
      return False
    if end.last:
      pictures = [loop.workdir / p for p in PICTURES if (loop.workdir / p).is_file()]
      _guarded(self.name, "logging the pictures", self.tracker.pictures, pictures, end.epoch)
      _guarded(self.name, "closing its run", self.tracker.close)
      self.tracker = None
    return True


def make(name: str, settings: dict) -> tuple:
  """The loop actions of the `tracker` setting: () for "none"."""
  return () if name == "none" else (Tracker(name, settings),)


def log_evaluation(name: str, workdir, epoch: int, figures: dict) -> None:
  """`experiments.evaluate`'s figures (eval/NAME at the evaluated epoch) in the run's
  tracked run, when it has a tracker."""
  if name == "none" or not multihost.is_primary():
    return
  tracker = _open(name, pathlib.Path(workdir), None)
  if tracker is not None:
    _guarded(name, "logging the evaluation", tracker.log,
             {f"eval/{k}": float(v) for k, v in figures.items()}, epoch)
    _guarded(name, "closing its run", tracker.close)
