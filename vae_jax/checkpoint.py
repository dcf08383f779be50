"""Checkpoints of the train state with orbax: atomic, the last few kept.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed while saving leaves the previous checkpoints intact
and `latest_epoch` never sees the half-written one.
"""

import hashlib
import logging
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers



class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or none could be restored."""


class _Damaged(Exception):
  """One checkpoint failed to restore or to verify."""


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return (text.splitlines()[0] if text else type(e).__name__)[:160]


def state_bytes(state) -> int:
  """The bytes a checkpoint of `state` (arrays or shapes) holds, before compression."""
  return sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
             for x in jax.tree_util.tree_leaves(state))


def checksum(tree) -> np.ndarray:
  """sha256 of every array of `tree` (this process's replica), in tree order: uint8 `[32]`."""
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(tree):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      leaf = leaf.addressable_data(0)
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  return np.frombuffer(h.digest(), np.uint8).copy()


def _missing_index_files(default: pathlib.Path) -> list[str]:
  """The index files of an orbax (OCDBT) checkpoint directory that are not there."""
  ocdbt = sorted(default.glob("ocdbt.process_*"))
  if not ocdbt and not (default / "manifest.ocdbt").exists():
    return []  # not an OCDBT checkpoint: orbax alone knows what it needs
  needed = [default / "_METADATA", default / "manifest.ocdbt"]
  needed += [d / "manifest.ocdbt" for d in ocdbt]
  return [str(p.relative_to(default.parent)) for p in needed if not p.exists()]


def _as_item(state):
  # A NamedTuple (TrainState) is saved under its field names; any other pytree as it is.
  return state._asdict() if hasattr(state, "_asdict") else state


class Checkpointer:
  """Saves and restores (epoch, state, root key, record) under `directory`, verified.

  `state` is any pytree of arrays (e.g. a `TrainState`). Checkpoints are
  indexed by the number of completed epochs, and each carries a sha256 of its
  arrays and its epoch, and the epoch's metrics record (JSON, in orbax's step
  metadata): `restore` checks them and, when the newest checkpoint is damaged or
  incomplete, says so in one line and falls back to the newest intact one. The
  next `save` of an epoch at or below a damaged checkpoint replaces it, saying so
  (orbax would otherwise skip a step at or below its newest).
  """

  def __init__(self, directory, *, max_to_keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    # The newest max_to_keep, by orbax's preservation policy (max_to_keep itself is deprecated).
    self._options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.LatestN(max_to_keep), create=True,
        enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)
    self._failed = False
    self._damaged = set()  # steps `restore` found damaged and passed over

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def save(self, epoch: int, state, root_key, record: dict | None = None) -> None:
    """Starts writing in the background; the arrays are copied first, so the
    caller may donate `state` to the next epoch at once. `record` (JSON-able)
    is kept with the checkpoint (see `record`)."""
    self.wait()  # raises here if the previous save failed
    self._replace_damaged(epoch)
    # Host numpy for the root key: a process-local jax.Array cannot be saved
    # by several processes; the state's arrays are global (replicated).
    epoch_array = np.asarray(epoch, np.int32)
    item = {"state": _as_item(state), "epoch": epoch_array,
            "root_key": np.asarray(jax.random.key_data(root_key)),
            "sha256": checksum((_as_item(state), epoch_array))}
    metadata = {"record": record} if record is not None else None
    self._check_space(epoch, item)
    self._guard(lambda: self._manager.save(epoch, args=ocp.args.StandardSave(item),
                                           custom_metadata=metadata))

  def _check_space(self, epoch: int, item) -> None:
    """Refuses a save the disk has no room for before orbax's threads start writing it
    (whose failures print hundreds of lines): the arrays' bytes and 1 MB for the rest."""
    need = sum(int(getattr(a, "nbytes", 0)) for a in jax.tree_util.tree_leaves(item)) + 2**20
    free = shutil.disk_usage(self.directory).free
    if free < need:
      self._failed = True
      raise CheckpointError(
          f"could not write the checkpoint of epoch {epoch} in {self.directory}: it needs "
          f"about {need / 2**20:.1f} MB and {free / 2**20:.1f} MB are free; "
          f"{self._last_complete()}. Free some space or pass another workdir, then run "
          f"again to resume")

  def _last_complete(self) -> str:
    last = self._manager.latest_step()
    return "no checkpoint is complete yet" if last is None else (
        f"the last complete one is epoch {last}")

  def _replace_damaged(self, epoch: int) -> None:
    """Deletes the damaged checkpoints at or above `epoch`, which a run resumed from
    an older one is now retraining, so that its save is not skipped."""
    for step in sorted(s for s in self._manager.all_steps() if s >= epoch):
      if step not in self._damaged:
        raise CheckpointError(f"{self.directory}: saving epoch {epoch}, but checkpoint {step} "
                              f"is already there; pass another workdir or fresh=True")
      logging.warning("Replacing checkpoint %d in %s (damaged: restored from an older one) %s",
                      step, self.directory, "with the retrained epoch" if step == epoch else
                      f"as epoch {epoch} is retrained")
      self._guard(lambda step=step: self._manager.delete(step))
      self._damaged.discard(step)

  def record(self, epoch: int) -> dict | None:
    """The metrics record saved with checkpoint `epoch` (None if it has none)."""
    try:
      custom = self._manager.metadata(epoch).custom_metadata or {}
    except Exception:  # pylint: disable=broad-except  # no readable metadata: no record
      return None
    return custom.get("record")

  def restore(self, template, root_key, epoch: int | None = None, check=None):
    """The newest intact checkpoint (or exactly `epoch`) as (epoch, state).

    Args:
      template: a state of the same structure, shapes and shardings (e.g. a
        fresh `init_state`).
      root_key: the run's root key, checked against the saved one.
      epoch: which checkpoint; None for the newest intact one.
      check: optional (epoch, state) -> None or the reason the pair is not
        consistent (e.g. a step counter that does not match the epoch); such a
        checkpoint counts as damaged.

    Raises:
      CheckpointError: no intact checkpoint (or `epoch` is missing or damaged).
      ValueError: the checkpoint was written with another seed.
    """
    steps = self._steps()
    if epoch is not None:
      if epoch not in steps:
        raise CheckpointError(f"{self.directory}: no checkpoint of epoch {epoch} (there: "
                              f"{sorted(steps) or 'none'}); pick one of those")
      steps = [epoch]
    damaged, first_error, tried = [], None, set()
    while steps:
      step = steps.pop(0)
      tried.add(step)
      try:
        item = self._restore_verified(step, template, root_key)
        state = (type(template)(**item["state"]) if hasattr(template, "_asdict")
                 else item["state"])
        reason = check(step, state) if check is not None else None
        if reason:
          raise _Damaged(reason)
      except _Damaged as e:
        if epoch is None and not (self.directory / str(step)).exists():
          # Deleted while we read it: a run writing this workdir rotated it away.
          logging.info("Checkpoint %d in %s was removed while it was read (a run is "
                       "writing there); taking the newest again", step, self.directory)
          steps = [s for s in self._steps() if s not in tried]
          continue
        damaged.append(step)
        self._damaged.add(step)
        first_error = first_error or str(e)
        logging.warning("Checkpoint %d in %s is damaged or incomplete (%s); %s", step,
                        self.directory, e, "trying an older one" if epoch is None else
                        "not restoring it")
        continue
      if not np.array_equal(item["root_key"], jax.random.key_data(root_key)):
        raise ValueError(f"{self.directory}: the checkpoint was written with another seed; "
                         f"pass the same seed, or fresh=True to start over")
      logging.info("Restored epoch %d from %s", step, self.directory)
      return int(item["epoch"]), state
    raise CheckpointError(
        f"{self.directory}: none of the checkpoints {damaged} could be restored into this model "
        f"(newest: {first_error}); they are kept there. If that run had other settings, pass "
        f"them again; else start over with fresh=True or another workdir")

  def _steps(self) -> list[int]:
    """The checkpoints on disk now, newest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps(), reverse=True)

  def _restore_verified(self, step, template, root_key):
    abstract = {"state": _as_item(template), "epoch": np.asarray(0, np.int32),
                "root_key": np.asarray(jax.random.key_data(root_key)),
                "sha256": np.zeros(32, np.uint8)}
    default = self.directory / str(step) / "default"
    if not default.is_dir():
      raise _Damaged("its directory holds no checkpoint data")
    missing = _missing_index_files(default)
    if missing:  # orbax would fail on them with a burst of asyncio tracebacks
      raise _Damaged(f"{', '.join(missing)} missing")
    self._check_shapes(step, abstract["state"])
    try:
      item = self._restore(step, abstract)
    except _Damaged as e:
      if "sha256" not in str(e):
        raise
      # Written before checkpoints carried a checksum: restored unverified.
      del abstract["sha256"]
      item = self._restore(step, abstract)
      logging.warning("Checkpoint %d in %s has no checksum (an older version wrote it); "
                      "restored unverified", step, self.directory)
      return item
    if int(item["epoch"]) != step:
      raise _Damaged(f"its epoch record says {int(item['epoch'])}, its directory {step}")
    saved = np.asarray(item["sha256"])
    if np.array_equal(saved, checksum((item["state"], np.asarray(item["epoch"], np.int32)))):
      return item
    if np.array_equal(saved, checksum(item["state"])):
      # Written before the checksum covered the epoch: the epoch was checked
      # against the directory above, and the caller's `check` sees the step counter.
      return item
    raise _Damaged("its arrays or epoch do not match the sha256 written with them")

  def _check_shapes(self, step, state) -> None:
    """Refuses, before orbax starts reading, a checkpoint whose arrays have other
    shapes than `state` (a run with other settings): one clear line instead of a
    failed asynchronous restore and its threads' tracebacks."""
    try:
      saved = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "default")
      saved = saved.tree["state"] if hasattr(saved, "tree") else saved["state"]
      shapes = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in
                jax.tree_util.tree_leaves_with_path(saved) if hasattr(a, "shape")}
    except Exception:  # pylint: disable=broad-except  # unreadable metadata: restore decides
      return
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
      name = jax.tree_util.keystr(path)
      if name in shapes and shapes[name] != tuple(np.shape(leaf)):
        raise CheckpointError(
            f"{self.directory}: checkpoint {step} holds arrays of other shapes than this model "
            f"({name}: {shapes[name]} there, {tuple(np.shape(leaf))} here): that run had "
            f"other settings. Pass them again; else start over with fresh=True or another "
            f"workdir (the checkpoints are kept)")

  def _restore(self, step, abstract):
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types for a truncated or missing file
      # A failed restore can leave the manager confused about the next one: start afresh.
      self._manager.close()
      self._manager = ocp.CheckpointManager(self.directory, options=self._options)
      raise _Damaged(_first_line(e)) from None

  def wait(self) -> None:
    """Blocks until every save has been written; raises CheckpointError if one failed."""
    self._guard(self._manager.wait_until_finished)

  def close(self) -> None:
    """Waits for the last save and releases orbax's threads."""
    try:
      self.wait()
    finally:
      if not self._failed:  # a failed manager may block in close(): leave it to exit
        self._manager.close()

  def _guard(self, fn):
    if self._failed:
      return
    try:
      fn()
    except (OSError, ValueError, RuntimeError) as e:
      self._failed = True
      # Orbax renames a checkpoint into place only once complete: what a failed
      # save left is a temporary directory, removed here.
      for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)
      reason = str(e).split(": ")[-1] if "No space left" in str(e) else str(e)
      raise CheckpointError(
          f"could not write a checkpoint in {self.directory} ({reason.strip()}); "
          f"{self._last_complete()}. Free some space or pass another workdir, then run again "
          f"to resume") from None
