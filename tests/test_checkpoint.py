"""Checkpoints: round trips, what the checksum covers, fallback and replacement of a
damaged checkpoint, the record kept with each, and a run's consistency checks."""

import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vae_jax import checkpoint, data, runner

KEY = jax.random.key(0)


def _state(value: float):
  return {"w": jnp.full((3, 4), value, jnp.float32), "step": jnp.asarray(int(value), jnp.int32)}


def _saved(directory, epochs, **kwargs) -> checkpoint.Checkpointer:
  ckpt = checkpoint.Checkpointer(directory, **kwargs)
  for e in epochs:
    ckpt.save(e, _state(e), KEY, {"epoch": e, "test_elbo": -100.0 + e})
  ckpt.wait()
  return ckpt


def test_round_trip_restores_arrays_epoch_and_record(tmp_path):
  ckpt = _saved(tmp_path, [1, 2, 3], max_to_keep=2)
  assert sorted(ckpt._manager.all_steps()) == [2, 3]  # pylint: disable=protected-access
  epoch, state = ckpt.restore(_state(0), KEY)
  assert epoch == 3
  chex.assert_trees_all_equal(state, _state(3))
  assert ckpt.record(3) == {"epoch": 3, "test_elbo": -97.0}
  epoch, state = ckpt.restore(_state(0), KEY, epoch=2)
  assert epoch == 2 and float(state["w"][0, 0]) == 2.0
  with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint of epoch 1 \(there: \[2, 3\]\)"):
    ckpt.restore(_state(0), KEY, epoch=1)
  with pytest.raises(ValueError, match="another seed"):
    ckpt.restore(_state(0), jax.random.key(1))
  ckpt.close()


def test_the_checksum_covers_the_epoch(tmp_path):
  ckpt = _saved(tmp_path, [1, 2])
  # The epoch-2 state saved under another epoch number, its checksum still over the
  # arrays alone (as an edit of the epoch record would leave it).
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = _state(2)
  for epoch_record, step in ((3, 3), (5, 4)):
    item = {"state": state, "epoch": np.asarray(epoch_record, np.int32),
            "root_key": np.asarray(jax.random.key_data(KEY)),
            "sha256": checkpoint.checksum((state, np.asarray(2, np.int32)))}
    ckpt._manager.save(step, args=ocp.args.StandardSave(item))  # pylint: disable=protected-access
    ckpt.wait()
  # 4: its epoch record (5) is not its directory's; 3: the epoch is not what the checksum
  # covered. Both are passed over, epoch 2 is restored.
  epoch, restored = ckpt.restore(_state(0), KEY)
  assert epoch == 2 and float(restored["w"][0, 0]) == 2.0
  assert ckpt._damaged == {3, 4}  # pylint: disable=protected-access
  ckpt.close()


def test_a_check_that_fails_counts_as_damage_and_the_next_save_replaces_it(tmp_path, caplog):
  ckpt = _saved(tmp_path, [1, 2, 3])
  inconsistent = lambda epoch, state: "step counter off" if epoch == 3 else None
  with caplog.at_level("WARNING"):
    epoch, _ = ckpt.restore(_state(0), KEY, check=inconsistent)
  assert epoch == 2
  assert any("Checkpoint 3" in r.getMessage() and "step counter off" in r.getMessage()
             for r in caplog.records)
  caplog.clear()
  with caplog.at_level("WARNING"):
    ckpt.save(3, _state(33), KEY, {"epoch": 3})
    ckpt.wait()
  assert any("Replacing checkpoint 3" in r.getMessage() for r in caplog.records)
  epoch, state = ckpt.restore(_state(0), KEY)
  assert epoch == 3 and float(state["w"][0, 0]) == 33.0  # the save was not skipped
  # An intact checkpoint at or above the epoch is never replaced silently.
  with pytest.raises(checkpoint.CheckpointError, match=r"saving epoch 2, but checkpoint 2 is already there"):
    ckpt.save(2, _state(2), KEY)
  ckpt.close()


def test_a_checkpoint_rotated_away_while_reading_is_not_called_damaged(tmp_path, caplog):
  ckpt = _saved(tmp_path, [1, 2])
  # What a reader sees when the trainer's rotation deletes the newest it listed.
  listed = ckpt._manager.all_steps  # pylint: disable=protected-access
  calls = []

  def stale(*args, **kwargs):
    calls.append(1)
    return [3, *listed(*args, **kwargs)] if len(calls) == 1 else listed(*args, **kwargs)
  ckpt._manager.all_steps = stale  # pylint: disable=protected-access
  with caplog.at_level("WARNING"):
    epoch, _ = ckpt.restore(_state(0), KEY)
  assert epoch == 2
  assert not [r for r in caplog.records if "damaged" in r.getMessage()]
  ckpt.close()


@pytest.fixture(scope="module")
def small(mnist):
  return data.subset(mnist, 512, 200)


CONFIG = runner.RunConfig(latent_dim=4, hidden_sizes=(32,), batch_size=64, epochs=2,
                          eval_batch_size=200)


def _replace(**kwargs):
  return runner.RunConfig(**{**CONFIG.__dict__, **kwargs})


@pytest.mark.slow
def test_a_checkpoint_whose_step_counter_disagrees_with_its_epoch_is_not_resumed(small, tmp_path):
  runner.train_and_evaluate(CONFIG, small, tmp_path)
  # Epoch 2's state saved as epoch 3, consistently checksummed: only the step counter
  # (16 where 3 epochs of 8 steps make 24) shows it.
  _, _, state, _ = runner.load_run(tmp_path)
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  ckpt.save(3, state, CONFIG.root_key())
  ckpt.close()
  runner.train_and_evaluate(_replace(epochs=3), small, tmp_path)
  _, _, state, epoch = runner.load_run(tmp_path)
  assert epoch == 3 and int(state.step) == 24
  assert [m["epoch"] for m in helpers.run_metrics(tmp_path)] == [1, 2, 3]


@pytest.mark.slow
def test_after_a_fallback_the_retrained_epoch_is_saved_in_place_of_the_damaged_one(
    small, tmp_path, caplog):
  runner.train_and_evaluate(CONFIG, small, tmp_path)
  shutil.rmtree(tmp_path / "checkpoints" / "2" / "default")  # damaged
  with caplog.at_level("WARNING"):
    runner.train_and_evaluate(CONFIG, small, tmp_path)  # resumes from 1, retrains 2
  assert any("Replacing checkpoint 2" in r.getMessage() for r in caplog.records)
  # The retrained epoch is what a reader finds, and what metrics.jsonl lists.
  _, _, _, epoch = runner.load_run(tmp_path)
  assert epoch == 2 and helpers.run_metrics(tmp_path)[-1]["epoch"] == 2
  caplog.clear()
  with caplog.at_level("INFO"):
    runner.train_and_evaluate(CONFIG, small, tmp_path)  # nothing left to do
  assert any("Nothing to train" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_torn_last_metrics_line_whose_checkpoint_exists_is_written_again(small, tmp_path):
  runner.train_and_evaluate(CONFIG, small, tmp_path)
  path = tmp_path / "metrics.jsonl"
  before = helpers.run_metrics(tmp_path)
  text = path.read_text()
  path.write_text(text[:len(text) - 40])  # a kill while appending epoch 2's line
  runner.train_and_evaluate(_replace(epochs=3), small, tmp_path)
  after = helpers.run_metrics(tmp_path)
  assert [m["epoch"] for m in after] == [1, 2, 3]
  assert after[:2] == before


@pytest.mark.parametrize("index_file", ["default/manifest.ocdbt", "default/_METADATA",
                                        "default/ocdbt.process_0/manifest.ocdbt"])
def test_a_missing_index_file_is_one_warning_and_no_tracebacks(index_file, tmp_path, caplog,
                                                               capfd):
  ckpt = _saved(tmp_path, [1, 2])
  (tmp_path / "2" / index_file).unlink()
  with caplog.at_level("WARNING"):
    epoch, _ = checkpoint.Checkpointer(tmp_path).restore(_state(0), KEY)
  assert epoch == 1
  warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert len(warned) == 1 and f"{index_file} missing" in warned[0], warned
  err = capfd.readouterr().err
  assert "Traceback" not in err and "Event loop is closed" not in err, err[-2000:]
  ckpt.close()
