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


def _bare_end(epoch, epochs=10, stopping=False):
  return hooks.EpochEnd(epoch, epochs, None, {}, [1.0], 1.0, stopping)


def test_a_periodic_action_is_due_every_n_epochs_on_named_epochs_at_the_last_and_by_time(
    monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(hooks.time, "perf_counter", lambda: clock[0])

  class Count(hooks.PeriodicAction):
    def __init__(self, **kw):
      super().__init__(**kw)
      self.ran = []

    def run(self, loop, end):
      self.ran.append(end.epoch)

  every = Count(every_epochs=3, on_epochs=(5,), at_last=True)
  for e in range(1, 11):
    every(None, _bare_end(e))
  assert every.ran == [3, 5, 6, 9, 10]
  timed = Count(every_secs=2.5)
  for e in range(1, 8):
    clock[0] = float(e)
    timed(None, _bare_end(e))
  assert timed.ran == [3, 6]  # 2.5 s after the start, then after its last run
  stopped = Count(at_last=True)
  stopped(None, _bare_end(4, stopping=True))
  assert stopped.ran == [4]


@pytest.mark.parametrize("values,patience,best", [
    ([1.0, 2.0, 3.0], 1, None),            # improving
    ([1.0, 3.0, 2.0], 1, 2),               # one evaluation without improvement
    ([1.0, 3.0, 2.0], 2, None),            # patience not yet spent
    ([1.0, 3.0, 2.0, 3.0], 2, 2),          # a tie is no improvement: the first best stays
    ([5.0], 0, 1),                         # patience 0 would stop at once (not offered)
])
def test_early_stopping_stops_after_patience_evaluations_without_improvement(values, patience,
                                                                             best):
  records = [{"epoch": 2 * (i + 1), "test_elbo": v} for i, v in enumerate(values)]
  reason = hooks.EarlyStopping(patience).stalled(records)
  if best is None:
    assert reason is None
  else:
    assert reason.startswith(f"early stopping: test_elbo has not improved for {patience} ")
    assert f"is epoch {2 * best}'s, whose checkpoint is kept (--epoch={2 * best}" in reason
  with pytest.raises(ValueError, match="early_stopping_metric=test_elbow: not a figure"):
    hooks.EarlyStopping(1, "test_elbow").stalled(records)


def test_a_loop_stop_keeps_its_first_reason():
  loop = hooks.Loop(None, None, None, None, None, None)
  loop.stop("first")
  loop.stop("second")
  assert loop.stop_reason == "first"


def test_an_epochs_line_fits_120_characters_and_adds_the_extras_that_fit(monkeypatch):
  loop, _ = _loop(monkeypatch, [])
  record = {"epoch": 1200, "test_elbo": -102.864, "test_reconstruction": -75.67,
            "test_kl": 27.19, "active_units": 20, "latent_units": 20, "epoch_s": 2.82,
            "examples_per_s": 21219.4, "train_elbo": -103.6}
  end = hooks.EpochEnd(1200, 3000, None, {}, [9.0] + [2.8] * 11, 40.0, False)
  line = hooks.epoch_line(loop.recipe, record, end)
  assert line == ("epoch 1200/3000  train ELBO -1.00  test ELBO -102.86 (KL 27.19, 20/20 active)  "
                  "2.82s  1h24m left")
  with_iwae = hooks.epoch_line(loop.recipe, {**record, "test_log_px_k5000": -99.5}, end)
  assert with_iwae == line.replace("  2.82s", "  IWAE k=5000 -99.50  2.82s") and len(with_iwae) <= 120
  # A figure that would make the line too long stays in metrics.jsonl alone.
  crowded = {**record, "test_log_px_k5000": -99.5, "replicas": [{}] * 4, "test_elbo_sd": 0.25}
  assert hooks.epoch_line(loop.recipe, crowded, end) == with_iwae
  # Replicas' means: counts to a tenth; a classifier's test error with its s.d. where
  # that fits, else alone.
  seeds = {**record, "active_units": 44.333333333333336, "latent_units": 50,
           "test_error": 0.10883, "test_error_sd": 0.004, "replicas": [{}] * 3,
           "test_elbo_sd": 0.25}
  short = hooks.EpochEnd(5, 30, None, {}, [9.0] + [2.8] * 4, 40.0, False)
  assert hooks.epoch_line(loop.recipe, {**seeds, "epoch": 5}, short) == (
      "epoch 5/30  train ELBO -1.00  test ELBO -102.86 (KL 27.19, 44.3/50 active)  "
      "test error 10.88±0.40%  2.82s  1m10s left")
  assert hooks.epoch_line(loop.recipe, seeds, end) == line.replace(
      "20/20 active)  ", "44.3/50 active)  test error 10.88%  ")


def test_short_evaluated_epochs_get_a_line_at_most_every_few_seconds(monkeypatch, caplog):
  loop, _ = _loop(monkeypatch, [])
  clock = iter(np.arange(0.0, 100.0, 0.5))  # each epoch half a second later
  monkeypatch.setattr(hooks.time, "perf_counter", lambda: next(clock))
  loop.last_line = 0.0
  with caplog.at_level("INFO"):
    for e in range(1, 11):
      hooks.Evaluation(every=1)(loop, hooks.EpochEnd(e, 10, _end(e, 10).state,
                                                    _end(e, 10).metrics, [0.5] * e, 1.0, False))
  shown = [int(r.getMessage().split()[1].split("/")[0]) for r in caplog.records]
  assert shown[0] == 1 and shown[-1] == 10 and len(shown) < 6, shown
  assert all(b - a >= 2 for a, b in zip(shown[:-2], shown[1:-1])), shown
