"""A whole training run: compiled epochs, evaluation, checkpoints, metrics and
pictures in one workdir, resumable from its checkpoints.

`train_and_evaluate` takes a `config.RunConfig` and, optionally, your own model
(any object with `init(key)` and `parts(params)`); everything else a run needs
comes built from the config (`config.build`), so nothing here switches on a
setting's name. The parts live in their own modules: settings and what they
build (`config`), the workdir's files (`workdir`), the epoch (`train`), the test
bound (`evaluate`), the pictures (`plots`), checkpoints (`checkpoint`).
"""

import contextlib
import dataclasses
import functools
import logging
import math
import pathlib
import time
from typing import Any

import jax
import numpy as np

from vae_jax import checkpoint as checkpoint_lib
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import evaluate
from vae_jax import memory
from vae_jax import multihost
from vae_jax import plots
from vae_jax import train
from vae_jax import workdir as workdir_lib
from vae_jax.config import RunConfig  # pylint: disable=unused-import  (runner.RunConfig)


PROGRESS_SECONDS = 10.0  # between evaluations, an epoch's line at most this often


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient."""


def train_and_evaluate(config: RunConfig, dataset: data_lib.Dataset, workdir, *,
                       model: config_lib.Model | None = None,
                       fresh: bool = False) -> dict[str, Any]:
  """Trains `config` on `dataset`, writing everything into `workdir`; returns the last metrics.

  A workdir that holds a checkpoint of the same configuration resumes from its
  latest epoch (`fresh=True` deletes it first). Every `eval_every` epochs (and at
  the last) it scores the test set, saves a checkpoint (the last
  `keep_checkpoints` kept), appends a line to metrics.jsonl and writes
  TensorBoard scalars and image grids; PNGs land at the end. SIGINT/SIGTERM
  stop it after the current epoch, with its checkpoint saved.

  Args:
    config: the run's settings.
    dataset: images `[n, H, W, C]` (see `data.Dataset`).
    workdir: where everything goes.
    model: your own model (an object with `init(key) -> params` and
      `parts(params) -> objectives.Parts`, hashable) instead of the one
      `config.model` names; set `config.model` to the "MODULE:FUNCTION" that
      builds it so that `load_run` (and `experiments.evaluate`) can rebuild it.
    fresh: start over, deleting the workdir's run.

  Raises:
    ValueError: an inconsistent configuration or workdir (the message names the argument).
    NonFiniteError: a non-finite loss or gradient (unless `skip_nonfinite`); the
      last good checkpoint is kept.
  """
  workdir = pathlib.Path(workdir)
  workdir_lib.check_is_dir(workdir)
  if not fresh and (workdir / "config.json").is_file():
    config_lib.read_run_config(workdir / "config.json")  # a damaged one: one line, now
  config = config_lib.resolve(config)
  config_lib.check_data(config, dataset.image_shape, dataset.train.shape[0])
  recipe = config_lib.build(config, dataset.image_shape, dataset.train.shape[0], model)
  abstract = jax.eval_shape(lambda k: config_lib.initial_state(recipe.model, recipe.optimizer, k),
                            jax.random.key(0))
  workdir_lib.check_disk_space(workdir, 2 * checkpoint_lib.state_bytes(abstract) + (1 << 20))
  settings = {**dataclasses.asdict(config), "data": _data_sizes(dataset)}
  # One run per workdir: process 0 holds the lock (on a shared file system the
  # others reach the workdir through it).
  with workdir_lib.Lock(workdir) if multihost.is_primary() else contextlib.nullcontext():
    workdir_lib.prepare(workdir, settings, dataclasses.asdict(RunConfig()),
                        config_lib.RESUMABLE, fresh)
    return _train(recipe, dataset, workdir, settings)


def _train(recipe, dataset, workdir, settings) -> dict[str, Any]:
  """The epochs of `train_and_evaluate`, once the workdir is locked and checked.

  SIGINT/SIGTERM are requests from here on, never exceptions (a KeyboardInterrupt
  raised inside one of XLA's garbage-collector callbacks is swallowed): one that
  arrives before the first epoch ends the run as an interruption, a later one
  after the current epoch, with its checkpoint saved."""
  with workdir_lib.StopRequest() as stop:
    return _epochs(recipe, dataset, workdir, settings, stop)


def _epochs(recipe, dataset, workdir, settings, stop) -> dict[str, Any]:
  train_images, test_x = recipe.inputs(dataset)
  model, mesh, root, policy = recipe.model, multihost.data_mesh(), recipe.root, recipe.policy
  state = multihost.replicate(config_lib.initial_state(model, recipe.optimizer, root), mesh)
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", max_to_keep=policy.keep_checkpoints)
  log = None
  try:
    steps_per_epoch = dataset.train.shape[0] // policy.batch_size
    start, state = _resume(ckpt, state, root, steps_per_epoch)
    workdir_lib.write_config(workdir, settings)  # only now, with the state accepted
    log = workdir_lib.MetricsLog(workdir, start, ckpt.record(start) if start else None,
                                 settings)
    epoch_fn = _epoch_fn(recipe, mesh)
    if start >= policy.epochs:
      logging.info("Nothing to train: the checkpoint in %s already has %d epochs", workdir, start)
      # The PNGs again (cheap), but not TensorBoard's images: those of this epoch are there.
      _pictures(workdir, None, model, multihost.local_copy(state.params), test_x, dataset, start,
                True)
      return log.last_record()
    batches = train.epoch_batches(train_images, root, start, policy.batch_size, mesh)
    epoch_fn = _compile_within_memory(epoch_fn, state, batches, root, recipe, start)
    if multihost.any_process(stop.signal is not None):
      raise KeyboardInterrupt  # before any work worth saving: the run ends here
    times, loop_start, record = [], time.perf_counter(), {}
    last_line = loop_start
    for epoch in range(start, policy.epochs):
      t0 = time.perf_counter()
      state, m = epoch_fn(state, batches, root)
      if epoch + 1 < policy.epochs:  # the host gathers the next epoch while this one runs
        batches = train.epoch_batches(train_images, root, epoch + 1, policy.batch_size, mesh)
      m = jax.device_get(m)  # the one host sync of the epoch
      times.append(time.perf_counter() - t0)
      _check_finite(m, epoch, ckpt.latest_epoch(), policy.skip_nonfinite)
      last = epoch + 1 == policy.epochs
      stopping = multihost.any_process(stop.signal is not None)
      if (epoch + 1) % policy.eval_every and not last and not stopping:
        # Evaluation, checkpoint and pictures every eval_every epochs; between them a
        # short line at most every PROGRESS_SECONDS, so a long stretch says where it is.
        if time.perf_counter() - last_line >= PROGRESS_SECONDS:
          _log_progress(recipe, epoch + 1, m, times[-1])
          last_line = time.perf_counter()
        continue
      record = _evaluate_and_save(recipe, epoch, state, m, times, log.wall_before
                                  + time.perf_counter() - loop_start, test_x, dataset, ckpt,
                                  log, workdir)
      last_line = time.perf_counter()
      if stopping:
        logging.warning("%s: stopping after epoch %d; its checkpoint is saved. Run the same "
                        "command again to resume.", stop.signal or "a signal to another "
                        "process", epoch + 1)
        break
    return record
  finally:
    try:
      ckpt.close()
    finally:
      if log is not None:
        log.close()


def _evaluate_and_save(recipe, epoch, state, m, times, wall_s, test_x, dataset, ckpt, log,
                       workdir) -> dict:
  """An evaluated epoch: the test bound and active units, its checkpoint, its metrics
  line, its pictures and its log line; returns its record."""
  params = multihost.local_copy(state.params)
  test = recipe.evaluate(params, test_x, train.eval_key(recipe.root))
  record = _record(recipe, epoch, state, m, test, times[-1], wall_s)
  ckpt.save(epoch + 1, state, recipe.root, record)
  log.record(record)
  _pictures(workdir, log, recipe.model, params, test_x, dataset, epoch + 1,
            epoch + 1 == recipe.policy.epochs)
  _log_epoch(recipe, record, times)
  return record


def load_run(workdir, epoch: int | None = None, *, model: str | None = None):
  """A finished or running run's (RunConfig, model, TrainState, epoch) from its workdir;
  `model` has `init` and `parts` (see `train_and_evaluate`).

  A run of your own model records the "MODULE:FUNCTION" that builds it in its
  config.json. Loading would import and call that code, so, as with a pickle, it
  runs only when you name the same builder: `model="MODULE:FUNCTION"`
  (`--model` on the command line). Built-in models need nothing.
  """
  workdir = pathlib.Path(workdir)
  if not (workdir / "config.json").is_file():
    raise ValueError(f"workdir={workdir}: no config.json there; pass the workdir of a "
                     f"training run")
  config, sizes = config_lib.read_run_config(workdir / "config.json")
  config_lib.check_builder(config, model, workdir)
  recipe = config_lib.build(config, tuple(sizes["image_shape"]), sizes["train_examples"])
  model, root = recipe.model, recipe.root
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints")
  try:
    if ckpt.latest_epoch() is None:
      raise ValueError(f"workdir={workdir}: holds no checkpoint yet")
    template = config_lib.initial_state(model, recipe.optimizer, root)
    if jax.process_count() > 1:  # several processes restore global arrays together
      template = multihost.replicate(template, multihost.data_mesh())
    epoch, state = ckpt.restore(template, root, epoch)
  finally:
    ckpt.close()
  return config, model, state, epoch


def _data_sizes(dataset: data_lib.Dataset) -> dict:
  return {"train_examples": int(dataset.train.shape[0]),
          "test_examples": int(dataset.test.shape[0]),
          "input_dim": int(math.prod(dataset.image_shape)),
          "image_shape": list(dataset.image_shape)}


def _resume(ckpt: checkpoint_lib.Checkpointer, state, root, steps_per_epoch: int):
  """(epochs done, state): from the newest intact checkpoint whose step counter is
  its epochs' steps, or (0, `state`)."""
  if ckpt.latest_epoch() is None:
    return 0, state

  def check(epoch, restored):
    step = int(multihost.local_copy(restored.step))
    if step != epoch * steps_per_epoch:
      return (f"its step counter is {step}, but {epoch} epochs of {steps_per_epoch} steps "
              f"make {epoch * steps_per_epoch}")
    return None

  start, state = ckpt.restore(state, root, check=check)
  logging.info("Resuming from the checkpoint of epoch %d in %s", start, ckpt.directory)
  return start, state


def _epoch_fn(recipe: config_lib.Recipe, mesh):
  return train.make_train_epoch(
      recipe.loss, recipe.optimizer, transform=recipe.transform,
      skip_nonfinite=recipe.policy.skip_nonfinite, mesh=mesh, grad_norm=recipe.policy.grad_norm,
      host_loop=recipe.host_loop)


def _compile_within_memory(epoch_fn, state, batches, root, recipe, start: int):
  """The epoch compiled ahead of its first call (its shapes never change), said in the
  log, and refused with one line when XLA's count of the memory it needs beyond its
  inputs exceeds what is free: a setting too large fails here, not after minutes."""
  logging.info("Compiling the training epoch (XLA; the compilation cache lets a second run "
               "of the same settings skip most of it)")
  t0 = time.perf_counter()
  compiled = epoch_fn.lower(state, batches, root).compile()
  logging.info("Compiled in %.1fs; training epochs %d to %d", time.perf_counter() - t0,
               start + 1, recipe.policy.epochs)
  stats = compiled.memory_analysis()
  if stats is not None:
    knob = recipe.memory_knob
    memory.check_fits(stats.temp_size_in_bytes + stats.output_size_in_bytes, 0.9,
                      f"a training step needs about {{gib}} ({knob}, "
                      f"batch_size={recipe.policy.batch_size})",
                      f"lower {knob.setting} or batch_size")
  return compiled


def _check_finite(m: dict, epoch: int, last_good: int | None, skip_nonfinite: bool) -> None:
  """Stops the run on a non-finite step (unless skipped), or when every step was skipped."""
  steps = int(m["steps"])
  if m["nonfinite_steps"] and not skip_nonfinite:
    raise NonFiniteError(
        f"non-finite loss or gradient at step {int(m['first_nonfinite_step'])} (epoch "
        f"{epoch + 1}); stopped without saving: the checkpoint of epoch {last_good} is the "
        f"last good one. Lower learning_rate, or pass skip_nonfinite=True to skip such steps")
  if m["nonfinite_steps"] == steps:
    raise NonFiniteError(
        f"every one of the {steps} steps of epoch {epoch + 1} had a non-finite loss or "
        f"gradient and was skipped; stopped without saving: the checkpoint of epoch "
        f"{last_good} is the last good one. Lower learning_rate")
  if m["nonfinite_steps"]:
    logging.warning("epoch %d: skipped %d of %d steps (non-finite loss or gradient)",
                    epoch + 1, int(m["nonfinite_steps"]), steps)


def _record(recipe, epoch, state, m, test, seconds, wall_s) -> dict:
  """The metrics.jsonl line of an evaluated epoch."""
  examples = int(m["steps"]) * recipe.policy.batch_size
  record = {"epoch": epoch + 1, "step": int(multihost.local_copy(state.step)),
            **{f"train_{k}": float(v) for k, v in m.items()
               if k not in ("grad_norm", "nonfinite_steps", "first_nonfinite_step", "steps")},
            **test,  # the eval_methods' figures: test_elbo, active_units, ...
            **({"grad_norm": float(m["grad_norm"])} if "grad_norm" in m else {}),
            "skipped_steps": int(m["nonfinite_steps"]),
            "examples_per_s": examples / seconds, "epoch_s": seconds,
            "examples_seen": (epoch + 1) * examples,
            "wall_s": wall_s}  # seconds of this run so far, resumed sittings added up
  return {**record, **recipe.extra_metrics(record)}


@functools.partial(jax.jit, static_argnums=0)
def _model_images(parts_fn, params, x, key):
  """`plots.model_images`, compiled once per model (`parts_fn` is static, as in
  `evaluate`): op by op it cost 0.35 s per evaluation."""
  return plots.model_images(parts_fn(params), x, key)


def _pictures(workdir, log, model, params, test_x, dataset, step: int, write_png: bool) -> None:
  """TensorBoard grids at every evaluation; PNGs (and the latent scatter) at the end."""
  if not multihost.is_primary():
    return
  images = _model_images(model.parts, params, test_x[:64], jax.random.key(0))
  grids = plots.model_grids(images, test_x, dataset.image_shape)
  if log is not None:
    log.add_images(grids, step)
  if not write_png:
    return
  plots.save_model_grids(workdir, grids, f"{workdir.name}, epoch {step}")
  if "manifold" in grids:
    means = np.asarray(evaluate.encoder_means(model.parts, params, test_x))
    plots.save_latent_scatter(workdir / "latent_means.png", means, dataset.test_labels,
                              "test set: encoder means")


def _log_epoch(recipe: config_lib.Recipe, record: dict, times: list[float]) -> None:
  """One line per evaluated epoch."""
  # The first epoch of a process compiles: leave it out of the estimate.
  epoch, epochs = record["epoch"], recipe.policy.epochs
  left = (epochs - epoch) * float(np.median(times[1:])) if times[1:] else None
  if epoch == epochs:
    left = 0.0
  # Active units count the dimensions whose posterior mean moves with x, which the KL
  # alone does not show: a KL can be large with every mean constant.
  units = (f", {record['active_units']} active units (of {record['latent_units']}: "
           f"Cov_x E_q[u|x] > {evaluate.ACTIVE_UNIT_THRESHOLD:g})" if "active_units" in record
           else "")
  units += "".join(f", IWAE bound (k={name[len('test_log_px_k'):]}) {value:.2f}"
                   for name, value in record.items() if name.startswith("test_log_px_k"))
  logging.info("epoch %d/%d  %s  test ELBO %.2f (recon %.2f, KL %.2f%s) nats  %.2fs (%.0f ex/s)"
               "  %s", epoch, epochs, recipe.train_summary(record), record["test_elbo"],
               record["test_reconstruction"], record["test_kl"], units, record["epoch_s"],
               record["examples_per_s"], _duration(left))


def _log_progress(recipe: config_lib.Recipe, epoch: int, m: dict, seconds: float) -> None:
  """A short line for an epoch that is not evaluated: its training figures and time."""
  every, epochs = recipe.policy.eval_every, recipe.policy.epochs
  logging.info("epoch %d/%d  %s  %.2fs (next evaluation after epoch %d)", epoch, epochs,
               recipe.train_summary({f"train_{k}": float(v) for k, v in m.items()}), seconds,
               min(epochs, -(-epoch // every) * every))


def _duration(seconds: float | None) -> str:
  if seconds == 0:
    return "done"
  if seconds is None:
    return "(time left: after the next epoch, the first not compiled)"
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s") + " left"

