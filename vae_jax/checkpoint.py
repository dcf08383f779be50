"""Checkpoints of the train state with orbax: atomic, the last few kept.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed while saving leaves the previous checkpoints intact
and `latest_epoch` never sees the half-written one.
"""

import logging
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax.train import TrainState


class CheckpointError(RuntimeError):
  """A checkpoint could not be written; the earlier ones are intact."""


def state_bytes(state) -> int:
  """The bytes a checkpoint of `state` (arrays or shapes) holds, before compression."""
  return sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
             for x in jax.tree_util.tree_leaves(state))


class Checkpointer:
  """Saves and restores (epoch, TrainState, root key) under `directory`.

  Checkpoints are indexed by the number of completed epochs.
  """

  def __init__(self, directory, *, max_to_keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._failed = False

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def save(self, epoch: int, state: TrainState, root_key) -> None:
    """Starts writing in the background; the arrays are copied first, so the
    caller may donate `state` to the next epoch at once."""
    self.wait()  # raises here if the previous save failed
    # Host numpy for the root key: a process-local jax.Array cannot be saved
    # by several processes; the state's arrays are global (replicated).
    item = {"state": state._asdict(), "epoch": np.asarray(epoch, np.int32),
            "root_key": np.asarray(jax.random.key_data(root_key))}
    self._guard(lambda: self._manager.save(epoch, args=ocp.args.StandardSave(item)))

  def restore(self, template: TrainState, root_key, epoch: int | None = None):
    """The checkpoint of `epoch` (default: the latest) as (epoch, TrainState).

    Args:
      template: a TrainState of the same structure (e.g. a fresh `init_state`).
      root_key: the run's root key, checked against the saved one.
      epoch: which checkpoint; None for the latest.
    """
    epoch = self.latest_epoch() if epoch is None else epoch
    abstract = {"state": template._asdict(), "epoch": np.asarray(0, np.int32),
                "root_key": np.asarray(jax.random.key_data(root_key))}
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract)
    item = self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
    if not np.array_equal(item["root_key"], jax.random.key_data(root_key)):
      raise ValueError(f"{self.directory}: the checkpoint was written with another --seed; "
                       f"pass the same seed, or --fresh to start over")
    logging.info("Restored epoch %d from %s", epoch, self.directory)
    return int(item["epoch"]), TrainState(**item["state"])

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
          f"could not write a checkpoint in {self.directory} ({reason.strip()}); the last "
          f"complete one is epoch {self._manager.latest_step()}. Free some space or pass "
          f"another --workdir, then run again to resume") from None
