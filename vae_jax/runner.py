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
import logging
import math
import pathlib
import time
from typing import Any

import jax
import numpy as np

from vae_jax import checkpoint as checkpoint_lib
from vae_jax import config as config_lib
from vae_jax import console
from vae_jax import data as data_lib
from vae_jax import hooks
from vae_jax import memory
from vae_jax import multihost
from vae_jax import recipe as recipe_lib
from vae_jax import train
from vae_jax import workdir as workdir_lib
from vae_jax.config import RunConfig  # pylint: disable=unused-import  (runner.RunConfig)


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient."""


def train_and_evaluate(config: RunConfig, dataset: data_lib.Dataset, workdir, *,
                       model: config_lib.Model | None = None,
                       fresh: bool = False, hooks: tuple = ()) -> dict[str, Any]:
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
    hooks: your own actions, each called as `hook(loop, end)` after every epoch, after
      the built-in ones (`hooks.Loop`: the run's parts and files, `loop.record` the
      last evaluated epoch's metrics, `loop.stop(reason)` ends the run after this
      epoch with its checkpoint saved; `hooks.EpochEnd`: the epoch, its state and
      training metrics); one with `on_start(loop)` is called before the first epoch
      and may stop the run there. `hooks.PeriodicAction` gives CLU's triggers.

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
  config_lib.check_data(config, dataset)
  for line in config_lib.schedule_warnings(config):
    logging.warning(line)
  recipe = recipe_lib.build(config, dataset.image_shape, dataset.train.shape[0], model,
                            num_classes=dataset.num_classes)
  abstract = jax.eval_shape(lambda k: recipe_lib.initial_state(recipe.model, recipe.optimizer, k),
                            recipe.root)
  workdir_lib.check_disk_space(workdir, 2 * checkpoint_lib.state_bytes(abstract) + (1 << 20))
  settings = {**dataclasses.asdict(config), "data": _data_sizes(dataset)}
  # One run per workdir: process 0 holds the lock (on a shared file system the
  # others reach the workdir through it).
  with workdir_lib.Lock(workdir) if multihost.is_primary() else contextlib.nullcontext():
    workdir_lib.prepare(workdir, settings, dataclasses.asdict(RunConfig()),
                        config_lib.RESUMABLE, fresh)
    with (console.run_log(workdir / console.LOG_FILE) if multihost.is_primary()
          else contextlib.nullcontext()):
      return _train(recipe, dataset, workdir, settings, tuple(hooks))


def _train(recipe, dataset, workdir, settings, user_hooks: tuple) -> dict[str, Any]:
  """The epochs of `train_and_evaluate`, once the workdir is locked and checked.

  While the state is built (minutes for a long flow) Ctrl-C raises KeyboardInterrupt
  at once: nothing is worth saving yet. From the compile on, SIGINT/SIGTERM are
  requests, never exceptions (a KeyboardInterrupt raised inside one of XLA's
  garbage-collector callbacks is swallowed): one that arrives before the first epoch
  ends the run as an interruption once the compile returns, a later one after the
  current epoch, with its checkpoint saved."""
  train_images, test_x = recipe.inputs(dataset)
  model, mesh, root, policy = recipe.model, multihost.data_mesh(), recipe.root, recipe.policy
  state = multihost.replicate(_build(recipe_lib.initial_state, model, recipe.optimizer, root),
                              mesh)
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", max_to_keep=policy.keep_checkpoints)
  log = None
  try:
    steps_per_epoch = dataset.train.shape[0] // policy.batch_size
    start, state = _resume(ckpt, state, root, steps_per_epoch)
    config_path = workdir / "config.json"
    old = workdir_lib.read_json(config_path) if start and config_path.is_file() else None
    record = workdir_lib.run_record(old, settings, start, config_lib.SEGMENTED)
    if start < policy.epochs:  # only now, with the state accepted
      workdir_lib.write_config(workdir, record)
    changed = _changes(record.get("segments", [{}])[-1], start)
    log = workdir_lib.MetricsLog(workdir, start, ckpt.record(start) if start else None,
                                 settings, changed=changed)
    epoch_fn = _epoch_fn(recipe, mesh)
    if start >= policy.epochs:
      unused = dict(changed)
      if old and old.get("epochs") != policy.epochs:
        unused["epochs"] = policy.epochs
      if unused:
        logging.warning("The run in %s is finished (%d epochs): %s trained nothing, so its "
                        "config.json keeps the settings its epochs used", workdir, start,
                        ", ".join(f"{k}={v}" for k, v in unused.items()))
      logging.info("Nothing to train: the checkpoint in %s already has %d epochs", workdir, start)
      # The PNGs again (cheap), but not TensorBoard's images: those of this epoch are there.
      params = multihost.local_copy(state.params)
      hooks.pictures(workdir, None, recipe, hooks.replica(params, 0) if root.ndim else params,
                     test_x, dataset, start, True)
      return log.last_record()
    loop = hooks.Loop(recipe, workdir, ckpt, log, test_x, dataset, log.last_record())
    actions = recipe.hooks + user_hooks
    for action in actions:
      if callable(getattr(action, "on_start", None)):
        action.on_start(loop)
    if loop.stop_reason:
      logging.info("Nothing to train in %s after epoch %d: %s", workdir, start, loop.stop_reason)
      return loop.record
    batches = train.epoch_batches(train_images, root, start, policy.batch_size, mesh,
                                policy.labelled)
    with workdir_lib.StopRequest() as stop:
      epoch_fn = _build(_compile_within_memory, epoch_fn, state, batches, root, recipe, start,
                        stop=stop)
      if multihost.any_process(stop.signal is not None):
        raise KeyboardInterrupt  # before any work worth saving: the run ends here
      record = _loop(recipe, actions, loop, epoch_fn, state, batches, train_images, start,
                     stop)
      ckpt.wait()  # the last save's failure is raised here, where its line is dropped
      return record
  except checkpoint_lib.CheckpointError:
    if log is not None:  # a line for an epoch whose checkpoint failed would be a record of none
      log.keep_until(ckpt.latest_epoch())
    raise
  finally:
    try:
      ckpt.close()
    finally:
      if log is not None:
        log.close()


def _build(fn, *args, stop=None):
  """`fn(*args)`, a step of the run's build: with one process, where Ctrl-C (or `stop`'s
  signal) ends it at once (`workdir.interruptible`); several processes build together
  and agree on a stop after the compile."""
  if jax.process_count() > 1:
    return fn(*args)
  return workdir_lib.interruptible(fn, *args, stop=stop)


def _loop(recipe, actions, loop, epoch_fn, state, batches, train_images, start: int,
          stop) -> dict:
  """The epochs from `start`, each followed by `actions` (the recipe's hooks, then the
  caller's); a signal (`stop`) or an action's `loop.stop` ends the run after its epoch,
  with the checkpoint saved."""
  with console.epoch_bar(start, recipe.policy.epochs,
                         show=None if multihost.is_primary() else False) as bar:
    return _epochs(recipe, actions, loop, epoch_fn, state, batches, train_images, start, stop,
                   bar)


def _epochs(recipe, actions, loop, epoch_fn, state, batches, train_images, start: int, stop,
            bar) -> dict:
  policy, root, mesh = recipe.policy, recipe.root, multihost.data_mesh()
  times, loop_start = [], time.perf_counter()
  for epoch in range(start, policy.epochs):
    t0 = time.perf_counter()
    state, m = epoch_fn(state, batches, root, recipe.hparams)
    if epoch + 1 < policy.epochs:  # the host gathers the next epoch while this one runs
      batches = train.epoch_batches(train_images, root, epoch + 1, policy.batch_size, mesh,
                                    policy.labelled)
    m = jax.device_get(m)  # the one host sync of the epoch
    times.append(time.perf_counter() - t0)
    _check_finite(m, epoch, loop.ckpt.latest_epoch(), policy.skip_nonfinite)
    stopping = multihost.any_process(stop.signal is not None)
    end = hooks.EpochEnd(epoch + 1, policy.epochs, state, m, times,
                         loop.log.wall_before + time.perf_counter() - loop_start, stopping)
    for hook in actions:  # evaluation, checkpoint, pictures, progress, yours: each when due
      hook(loop, end)
    bar.update(hooks.train_summary(recipe, end))
    if not stopping and multihost.any_process(loop.stop_reason is not None):
      if loop.record.get("epoch") != end.epoch:  # an action's stop: evaluate and save it
        for hook in recipe.hooks:
          hook(loop, dataclasses.replace(end, stopping=True))
      logging.info("Stopping after epoch %d: %s", epoch + 1,
                   loop.stop_reason or "an action of another process stopped the run")
      break
    if stopping:
      logging.warning("%s: stopping after epoch %d; its checkpoint is saved. Run the same "
                      "command again to resume.", stop.signal or "a signal to another "
                      "process", epoch + 1)
      break
  return loop.record


def load_run(workdir, epoch: int | None = None, *, model: str | None = None):
  """A finished or running run's (RunConfig, model, TrainState, epoch) from its workdir;
  `model` has `init` and `parts` (see `train_and_evaluate`). The RunConfig holds the
  latest values of the settings a resume may change; where they changed, config.json's
  "segments" say from which epoch each value held, and a log line says so.

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
  for segment in workdir_lib.read_json(workdir / "config.json").get("segments", [])[1:]:
    logging.info("%s: from epoch %d the run trained with %s", workdir, segment["from_epoch"],
                 ", ".join(f"{k}={v}" for k, v in segment.items() if k != "from_epoch"))
  recipe = recipe_lib.build(config, tuple(sizes["image_shape"]), sizes["train_examples"],
                            num_classes=sizes.get("num_classes", 0))
  model, root = recipe.model, recipe.root
  abstract = jax.eval_shape(lambda k: recipe_lib.initial_state(model, recipe.optimizer, k), root)
  memory.check_fits(checkpoint_lib.state_bytes(abstract), 0.9,
                    f"{workdir / 'config.json'}'s model needs about {{gib}} for its "
                    f"parameters and optimizer state", "repair its sizes or pass another workdir")
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints")
  try:
    if ckpt.latest_epoch() is None:
      raise ValueError(f"workdir={workdir}: holds no checkpoint yet")
    template = recipe_lib.initial_state(model, recipe.optimizer, root)
    if jax.process_count() > 1:  # several processes restore global arrays together
      template = multihost.replicate(template, multihost.data_mesh())
    epoch, state = ckpt.restore(template, root, epoch)
  finally:
    ckpt.close()
  return config, model, state, epoch


def _changes(segment: dict, start: int) -> dict:
  """The settings a run resumed at `start` changed (its new segment's), or {}."""
  if segment.get("from_epoch") != start or not start:
    return {}
  return {k: v for k, v in segment.items() if k != "from_epoch"}


def _data_sizes(dataset: data_lib.Dataset) -> dict:
  return {"train_examples": int(dataset.train.shape[0]),
          "test_examples": int(dataset.test.shape[0]),
          "input_dim": int(math.prod(dataset.image_shape)),
          "image_shape": list(dataset.image_shape),
          "num_classes": dataset.num_classes}


def _resume(ckpt: checkpoint_lib.Checkpointer, state, root, steps_per_epoch: int):
  """(epochs done, state): from the newest intact checkpoint whose step counter is
  its epochs' steps, or (0, `state`)."""
  if ckpt.latest_epoch() is None:
    return 0, state

  def check(epoch, restored):
    step = int(np.max(multihost.local_copy(restored.step)))  # replicas step together
    if step != epoch * steps_per_epoch:
      return (f"its step counter is {step}, but {epoch} epochs of {steps_per_epoch} steps "
              f"make {epoch * steps_per_epoch}")
    return None

  start, state = ckpt.restore(state, root, check=check)
  logging.info("Resuming from the checkpoint of epoch %d in %s", start, ckpt.directory)
  return start, state


def _epoch_fn(recipe: recipe_lib.Recipe, mesh):
  return train.make_train_epoch(
      recipe.loss, recipe.optimizer, transform=recipe.transform,
      skip_nonfinite=recipe.policy.skip_nonfinite, mesh=mesh, grad_norm=recipe.policy.grad_norm,
      host_loop=recipe.host_loop, replicas=recipe.root.ndim > 0)


def _compile_within_memory(epoch_fn, state, batches, root, recipe, start: int):
  """The epoch compiled ahead of its first call (its shapes never change), said in the
  log, and refused with one line when XLA's count of the memory it needs beyond its
  inputs exceeds what is free: a setting too large fails here, not after minutes."""
  logging.info("Compiling the training epoch (XLA; the compilation cache lets a second run "
               "of the same settings skip most of it)")
  t0 = time.perf_counter()
  compiled = epoch_fn.lower(state, batches, root, recipe.hparams).compile()
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
  """Stops the run on a non-finite step (unless skipped), or when every step was skipped
  (of any replica: `[N]` metrics count them all)."""
  if np.ndim(m["steps"]):
    bad = np.asarray(m["first_nonfinite_step"])
    m = {"steps": np.sum(m["steps"]), "nonfinite_steps": np.sum(m["nonfinite_steps"]),
         "first_nonfinite_step": bad[bad >= 0].min() if (bad >= 0).any() else -1}
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
