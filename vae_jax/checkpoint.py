"""Checkpoints of the train state with orbax: atomic, the last few kept.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed while saving leaves the previous checkpoints intact
and `latest_epoch` never sees the half-written one.
"""

import logging
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax.train import TrainState


class Checkpointer:
  """Saves and restores (epoch, TrainState, root key) under `directory`.

  Checkpoints are indexed by the number of completed epochs.
  """

  def __init__(self, directory, *, max_to_keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def save(self, epoch: int, state: TrainState, root_key) -> None:
    """Starts writing in the background; the arrays are copied first, so the
    caller may donate `state` to the next epoch at once."""
    item = {"state": state._asdict(), "epoch": np.asarray(epoch, np.int32),
            "root_key": jax.random.key_data(root_key)}
    self._manager.save(epoch, args=ocp.args.StandardSave(item))

  def restore(self, template: TrainState, root_key, epoch: int | None = None):
    """The checkpoint of `epoch` (default: the latest) as (epoch, TrainState).

    Args:
      template: a TrainState of the same structure (e.g. a fresh `init_state`).
      root_key: the run's root key, checked against the saved one.
      epoch: which checkpoint; None for the latest.
    """
    epoch = self.latest_epoch() if epoch is None else epoch
    abstract = {"state": template._asdict(), "epoch": np.asarray(0, np.int32),
                "root_key": jax.random.key_data(root_key)}
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract)
    item = self._manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
    if not np.array_equal(item["root_key"], jax.random.key_data(root_key)):
      raise ValueError(f"{self.directory}: the checkpoint was written with another --seed; "
                       f"pass the same seed, or --fresh to start over")
    logging.info("Restored epoch %d from %s", epoch, self.directory)
    return int(item["epoch"]), TrainState(**item["state"])

  def wait(self) -> None:
    """Blocks until every save has been written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
