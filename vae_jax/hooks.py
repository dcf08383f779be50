"""The training loop's periodic actions (the shape of CLU's `periodic_actions`, as
google-research/vdm uses them): `config.build` makes them once from the settings, and
the loop calls each after every epoch; each decides whether it is due.

  Evaluation(every)  every `every` epochs, at the last one and when the run stops: the
                     test set scored by the run's evaluation methods, the checkpoint,
                     the metrics.jsonl line, TensorBoard's scalars and grids, the log
                     line, and at the last epoch the PNGs.
  Progress(seconds)  between evaluations, an epoch's short line at most every
                     `seconds`, so that a long stretch says where it is.

  EarlyStopping(patience, metric)  after an evaluation, stops the run when `metric` has
                     not improved for `patience` evaluations.

A hook is any callable `hook(loop: Loop, end: EpochEnd) -> bool` (True: it acted);
`PeriodicAction` gives one CLU's triggers. `train_and_evaluate(..., hooks=(...))` runs
yours after these; one ends the run after its epoch with `loop.stop(reason)` (the
epoch's checkpoint saved), and one with an `on_start(loop)` method may end it before
any training (early stopping at a rerun).
"""

import dataclasses
import functools
import logging
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import evaluate
from vae_jax import evaluators
from vae_jax import labels
from vae_jax import multihost
from vae_jax import plots
from vae_jax import train

PROGRESS_SECONDS = 10.0  # between evaluations, an epoch's line at most this often

@dataclasses.dataclass
class Loop:
  """What the hooks act on: the run's recipe and files, and what the loop has seen."""
  recipe: Any  # config.Recipe
  workdir: pathlib.Path
  ckpt: Any  # checkpoint.Checkpointer
  log: Any  # workdir.MetricsLog
  test_x: Any  # `[n, ...]` the test set's model inputs
  dataset: Any  # data.Dataset
  record: dict = dataclasses.field(default_factory=dict)  # the last evaluated epoch's
  last_line: float = dataclasses.field(default_factory=time.perf_counter)  # a log line's time
  stop_reason: str | None = None  # set by `stop`: the run ends after this epoch

  def stop(self, reason: str) -> None:
    """Ends the run after the current epoch (its checkpoint saved), saying `reason`."""
    self.stop_reason = self.stop_reason or reason


@dataclasses.dataclass(frozen=True)
class EpochEnd:
  """An epoch just trained."""
  epoch: int  # epochs done, counting resumed ones
  epochs: int  # in all
  state: Any  # train.TrainState
  metrics: dict  # its training metrics, on the host
  times: list  # seconds of each epoch of this sitting
  wall_s: float  # seconds of the run so far, resumed sittings added up
  stopping: bool  # a stop was requested: the run ends after this epoch

  @property
  def last(self) -> bool:
    return self.epoch == self.epochs or self.stopping


class PeriodicAction:
  """An action due every `every_epochs` epochs, at the epochs `on_epochs`, when
  `every_secs` seconds have passed since it last ran, and (with `at_last`) at the last
  epoch or a stop: CLU's `PeriodicAction` triggers. Subclasses give `run(loop, end)`."""

  def __init__(self, *, every_epochs: int | None = None, on_epochs=(),
               every_secs: float | None = None, at_last: bool = False):
    self.every_epochs, self.on_epochs = every_epochs, frozenset(on_epochs)
    self.every_secs, self.at_last = every_secs, at_last
    self._last_time = time.perf_counter()

  def due(self, end: EpochEnd) -> bool:
    return ((self.every_epochs is not None and end.epoch % self.every_epochs == 0)
            or end.epoch in self.on_epochs or (self.at_last and end.last)
            or (self.every_secs is not None
                and time.perf_counter() - self._last_time >= self.every_secs))

  def __call__(self, loop: Loop, end: EpochEnd) -> bool:
    if not self.due(end):
      return False
    self._last_time = time.perf_counter()
    self.run(loop, end)
    return True

  def run(self, loop: Loop, end: EpochEnd) -> None:
    raise NotImplementedError


class EarlyStopping:
  """After each evaluation, stops the run when `metric` (a metrics.jsonl figure, higher
  is better) has not improved for `patience` evaluations, naming the best epoch, whose
  checkpoint is kept (`keep_checkpoints` > `patience`). Read from metrics.jsonl, so a
  rerun of a stopped run stops before training (`on_start`)."""

  def __init__(self, patience: int, metric: str = "test_elbo"):
    self.patience, self.metric = patience, metric

  def stalled(self, records: list[dict]) -> str | None:
    """The reason to stop after `records` (metrics.jsonl's), or None."""
    scored = [r for r in records if isinstance(r.get(self.metric), (int, float))]
    if records and not scored:
      raise ValueError(f"early_stopping_metric={self.metric}: not a figure of metrics.jsonl "
                       f"(it has {', '.join(k for k in records[-1] if k != 'epoch')})")
    if len(scored) <= self.patience:
      return None
    best = max(range(len(scored)), key=lambda i: scored[i][self.metric])  # the first best
    if len(scored) - 1 - best < self.patience:
      return None
    return (f"early stopping: {self.metric} has not improved for {self.patience} evaluations; "
            f"the best, {scored[best][self.metric]:.4f}, is epoch {scored[best]['epoch']}'s, "
            f"whose checkpoint is kept (--epoch={scored[best]['epoch']} evaluates it)")

  def on_start(self, loop: Loop) -> bool:
    reason = self.stalled(loop.log.records())
    if reason:
      loop.stop(reason)
    return bool(reason)

  def __call__(self, loop: Loop, end: EpochEnd) -> bool:
    # After an evaluated epoch only: the records have not changed otherwise.
    return loop.record.get("epoch") == end.epoch and self.on_start(loop)


class Evaluation:
  """Every `every` epochs (and at the last, and at a stop): score, save, record, draw."""

  def __init__(self, every: int):
    self.every = every

  def __call__(self, loop: Loop, end: EpochEnd) -> bool:
    if end.epoch % self.every and not end.last:
      return False
    recipe = loop.recipe
    params = multihost.local_copy(end.state.params)
    if recipe.root.ndim:  # replicas: each scored with its own key, then mean and s.d.
      record = replica_summary([
          _record(recipe, end, recipe.evaluate(replica(params, r), loop.test_x,
                                               train.eval_key(root)), r)
          for r, root in enumerate(recipe.root)])
      params = replica(params, 0)  # the pictures: the first replica's
    else:
      record = _record(recipe, end, recipe.evaluate(params, loop.test_x,
                                                    train.eval_key(recipe.root)))
    loop.ckpt.save(end.epoch, end.state, recipe.root, record)
    loop.log.record(record)
    pictures(loop.workdir, loop.log, recipe, params, loop.test_x, loop.dataset,
             end.epoch, end.epoch == end.epochs)
    if end.last or len(end.times) == 1 or time.perf_counter() - loop.last_line >= LINE_SECONDS:
      logging.info(epoch_line(recipe, record, end))
      loop.last_line = time.perf_counter()
    loop.record = record
    return True


class Progress:
  """An epoch's short line at most every `seconds` (default `PROGRESS_SECONDS`) between
  evaluations: an evaluated epoch's own line counts as one."""

  def __init__(self, eval_every: int, seconds: float | None = None):
    self.eval_every, self.seconds = eval_every, seconds

  def __call__(self, loop: Loop, end: EpochEnd) -> bool:
    seconds = PROGRESS_SECONDS if self.seconds is None else self.seconds
    if (loop.record.get("epoch") == end.epoch
        or time.perf_counter() - loop.last_line < seconds):
      return False
    logging.info("epoch %d/%d  %s  %.2fs (next evaluation after epoch %d)", end.epoch,
                 end.epochs, train_summary(loop.recipe, end), end.times[-1],
                 min(end.epochs, -(-end.epoch // self.eval_every) * self.eval_every))
    loop.last_line = time.perf_counter()
    return True


def train_summary(recipe, end: EpochEnd) -> str:
  """The training part of an epoch's line, from its metrics (over replicas, the mean)."""
  return recipe.train_summary({f"train_{k}": float(np.mean(v)) for k, v in end.metrics.items()})


def replica(tree, r: int):
  """Replica r of a tree whose leaves carry a leading replica axis."""
  return jax.tree_util.tree_map(lambda a: a[r], tree)


def replica_summary(records: list[dict]) -> dict:
  """One metrics line for N replicas' records (`evaluators.over_seeds`): each figure's
  mean over them, the standard deviation (ddof 1) of each train_ and test_ figure and
  of the active units as NAME_sd, and the replicas' own figures under "replicas"."""
  spread = lambda k: k.startswith(("train_", "test_")) or k == "active_units"
  return {**evaluators.over_seeds(records, spread), "replicas": records}


def _record(recipe, end: EpochEnd, test: dict, r: int | None = None) -> dict:
  """The metrics.jsonl line of an evaluated epoch (of replica r, where there are several)."""
  m, seconds = end.metrics, end.times[-1]
  if r is not None:
    m = {k: v[r] for k, v in m.items()}
  examples = int(m["steps"]) * recipe.policy.batch_size
  step = multihost.local_copy(end.state.step)
  record = {"epoch": end.epoch, "step": int(step if r is None else step[r]),
            **{f"train_{k}": float(v) for k, v in m.items()
               if k not in ("grad_norm", "nonfinite_steps", "first_nonfinite_step", "steps")},
            **test,  # the eval_methods' figures: test_elbo, active_units, ...
            **({"grad_norm": float(m["grad_norm"])} if "grad_norm" in m else {}),
            "skipped_steps": int(m["nonfinite_steps"]),
            "examples_per_s": examples / seconds, "epoch_s": seconds,
            "examples_seen": end.epoch * examples,
            "wall_s": end.wall_s}
  return {**record, **recipe.extra_metrics(record)}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _model_images(parts_fn, params, rows, key, num_classes: int):
  """`plots.model_images`, compiled once per model (`parts_fn` is static, as in
  `evaluate`): op by op it cost 0.35 s per evaluation."""
  parts, x = labels.bind(parts_fn, params, rows)
  if not num_classes:
    return plots.model_images(parts, x, key)
  classes = jnp.repeat(jnp.arange(num_classes), plots.SAMPLES_PER_CLASS)
  return plots.model_images(parts, x, key, parts_fn(params, classes), num_classes)


def _drawn_classes(num_classes: int) -> int:
  """The classes samples.png draws a row of: the first `plots.MAX_CLASS_ROWS`."""
  return min(num_classes, plots.MAX_CLASS_ROWS)


def pictures(workdir, log, recipe, params, test_x, dataset, step: int, write_png: bool) -> None:
  """TensorBoard grids at every evaluation (with a `log`); PNGs (and the latent
  scatter) when `write_png`. Process 0 only."""
  if not multihost.is_primary() or len(dataset.image_shape) < 2:
    return  # process 0 draws; feature vectors (M1+M2's latent means) are no pictures
  model, k = recipe.model, _drawn_classes(recipe.num_classes)
  images = _model_images(model.parts, params, labels.take(test_x, 0, 64), jax.random.key(0), k)
  grids = plots.model_grids(images, labels.inputs(test_x), dataset.image_shape)
  if log is not None:
    log.add_images(grids, step)
  if not write_png:
    return
  caption = f"{workdir.name}, epoch {step}"
  if recipe.root.ndim:  # --seeds: the pictures are the first replica's
    caption += f", replica 0 of {len(recipe.root)} (its own seed)"
  plots.save_model_grids(workdir, grids, caption, k)
  if "manifold" in grids:
    means = np.asarray(evaluate.encoder_means(model.parts, params, test_x))
    plots.save_latent_scatter(workdir / "latent_means.png", means, dataset.test_labels,
                              "test set: encoder means")


LINE_CHARACTERS = 120  # an epoch's line; every figure is in metrics.jsonl and TensorBoard
LINE_SECONDS = 2.0  # short epochs: an evaluated epoch's line at most this often


def epoch_line(recipe, record: dict, end: EpochEnd) -> str:
  """An evaluated epoch's log line, at most `LINE_CHARACTERS` long: the bounds, the test
  KL (the reconstruction term is the ELBO plus it), the active units (of the latent
  units), then the extra figures while they fit (a classifier's test error, IWAE
  bounds, the spread over seeds), the epoch's seconds and the time left."""
  # The first epoch of a process compiles: leave it out of the estimate.
  epoch, epochs = record["epoch"], end.epochs
  left = (epochs - epoch) * float(np.median(end.times[1:])) if end.times[1:] else None
  if epoch == epochs:
    left = 0.0
  # Active units count the dimensions whose posterior mean moves with x, which the KL
  # alone does not show: a KL can be large with every mean constant.
  units = (f", {_count(record['active_units'])}/{_count(record['latent_units'])} active"
           if "active_units" in record else "")
  line = (f"epoch {epoch}/{epochs}  {recipe.train_summary(record)}  test ELBO "
          f"{record['test_elbo']:.2f} (KL {record['test_kl']:.2f}{units})")
  tail = f"  {record['epoch_s']:.2f}s  {_duration(left)}"
  # Each extra in its longer form where that fits, else its shorter one.
  extras = []
  if "test_error" in record:
    error = f"test error {100 * record['test_error']:.2f}%"
    extras.append([f"{error[:-1]}±{100 * record['test_error_sd']:.2f}% (s.d.)",
                   f"{error[:-1]}±{100 * record['test_error_sd']:.2f}%", error]
                  if "test_error_sd" in record else [error])
  extras += [[f"IWAE k={name[len('test_log_px_k'):]} {value:.2f}"]
             for name, value in record.items() if name.startswith("test_log_px_k")]
  if "replicas" in record:  # the spread over seeds beside the mean
    extras.append([f"ELBO s.d. over {len(record['replicas'])} seeds {record['test_elbo_sd']:.2f}"])
  for forms in extras:
    fits = [f for f in forms if len(line) + len(f) + 2 + len(tail) <= LINE_CHARACTERS]
    if fits:
      line += "  " + fits[0]
  line += tail
  return line


def _count(value) -> str:
  """A count, or the mean of replicas' counts to a tenth."""
  return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _duration(seconds: float | None) -> str:
  if seconds == 0:
    return "done"
  if seconds is None:
    return "(time left: after the next epoch)"
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s") + " left"
