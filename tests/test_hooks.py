"""The loop's periodic actions with a fake loop (no model, nothing compiled): when each
fires, what the evaluation hands on, and the lines they write."""

import types

import numpy as np
import pytest

from vae_jax import hooks


class Recorder:
  def __init__(self):
    self.calls = []

  def save(self, epoch, state, root, record):
    self.calls.append(("save", epoch))

  def record(self, record):
    self.calls.append(("record", record["epoch"]))


def _loop(monkeypatch, epochs_drawn):
  monkeypatch.setattr(hooks, "pictures", lambda workdir, log, recipe, params, x, dataset, step,
                      png: epochs_drawn.append((step, png)))
  monkeypatch.setattr(hooks.train, "eval_key", lambda root: "key")
  recipe = types.SimpleNamespace(
      root=np.zeros(()), policy=types.SimpleNamespace(batch_size=10),
      evaluate=lambda params, x, key: {"test_elbo": -100.0, "test_reconstruction": -90.0,
                                       "test_kl": 10.0},
      extra_metrics=lambda record: {"extra": 1}, train_summary=lambda m: "train ELBO -1.00")
  store = Recorder()
  return hooks.Loop(recipe, None, store, store, None, None), store


def _end(epoch, epochs, stopping=False):
  metrics = {"elbo": np.float32(-1.0), "steps": np.int32(4), "nonfinite_steps": np.int32(0),
             "first_nonfinite_step": np.int32(-1)}
  state = types.SimpleNamespace(params={}, step=np.int32(4 * epoch))
  return hooks.EpochEnd(epoch, epochs, state, metrics, [1.0, 0.5], 12.0, stopping)


def test_the_evaluation_fires_every_n_epochs_at_the_last_and_at_a_stop(monkeypatch):
  drawn = []
  loop, store = _loop(monkeypatch, drawn)
  evaluation = hooks.Evaluation(every=3)
  fired = [e for e in range(1, 8) if evaluation(loop, _end(e, 7))]
  assert fired == [3, 6, 7]
  assert store.calls == [("save", 3), ("record", 3), ("save", 6), ("record", 6),
                         ("save", 7), ("record", 7)]
  assert drawn == [(3, False), (6, False), (7, True)]  # the PNGs at the last epoch only
  assert evaluation(loop, _end(4, 7, stopping=True))  # a stop: scored and saved now


def test_the_evaluated_record_holds_the_training_and_test_figures(monkeypatch):
  loop, _ = _loop(monkeypatch, [])
  hooks.Evaluation(every=1)(loop, _end(2, 5))
  record = loop.record
  assert record["epoch"] == 2 and record["step"] == 8 and record["train_elbo"] == -1.0
  assert record["test_elbo"] == -100.0 and record["extra"] == 1
  assert record["examples_seen"] == 2 * 4 * 10 and record["examples_per_s"] == 40 / 0.5
  assert "train_steps" not in record and record["skipped_steps"] == 0


def test_progress_lines_come_between_evaluations_at_most_every_seconds(monkeypatch, caplog):
  loop, _ = _loop(monkeypatch, [])
  with caplog.at_level("INFO"):
    often, never = hooks.Progress(eval_every=5, seconds=0.0), hooks.Progress(5, seconds=1e9)
    assert [e for e in range(1, 5) if often(loop, _end(e, 10))] == [1, 2, 3, 4]
    assert not any(never(loop, _end(e, 10)) for e in range(1, 5))
    hooks.Evaluation(every=5)(loop, _end(5, 10))
    assert not often(loop, _end(5, 10))  # the evaluated epoch has its own line
  lines = [r.getMessage() for r in caplog.records]
  assert lines[0] == "epoch 1/10  train ELBO -1.00  0.50s (next evaluation after epoch 5)"


def test_replica_summary_gives_the_mean_the_spread_and_each_replica():
  records = [{"epoch": 1, "test_elbo": -100.0, "train_elbo": -110.0, "active_units": 3},
             {"epoch": 1, "test_elbo": -102.0, "train_elbo": -111.0, "active_units": 5}]
  out = hooks.replica_summary(records)
  assert out["test_elbo"] == -101.0 and out["epoch"] == 1
  assert out["test_elbo_sd"] == pytest.approx(2 ** 0.5) and out["active_units_sd"] > 0
  assert "epoch_sd" not in out and out["replicas"] == records


def test_durations_read_as_time_left():
  assert hooks._duration(0) == "done"
  assert hooks._duration(75) == "1m15s left" and hooks._duration(3725) == "1h02m left"
  assert "after the next epoch" in hooks._duration(None)
