"""The evaluation engine with a fake job (no model, nothing compiled): its plan, blocks,
resume, stop, process shares and call sizing."""

import numpy as np
import pytest

from vae_jax import engine


class FakeJob:
  """A job whose "log_px" is the sum of its rows' values, and that counts its calls."""
  name, grow_rows, sum_keys = "fake", True, ("log_px", "sq")

  def __init__(self, steps=4, unit=0.1):
    self.steps, self.unit, self.calls, self.rows_seen = steps, unit, [], []

  def prepare(self, rows) -> float:
    return self.unit

  def plan_line(self, n, rows, unit, total) -> str:
    return f"fake: {n} examples, about {total:.1f}s"

  def sums(self, rows, offset, steps_per_call, poll):
    self.rows_seen.extend(range(offset, offset + len(rows)))
    for _ in range(0, self.steps, steps_per_call):
      self.calls.append((offset, len(rows), steps_per_call))
      poll()
    return {"log_px": float(np.sum(rows)), "sq": float(np.sum(rows * rows))}

  def summary(self, totals, n, seconds):
    return {"log_px": totals["log_px"] / n, "n": n, "sq": totals["sq"]}


X = np.arange(100.0)


def test_blocks_cover_every_row_once_and_give_the_mean(monkeypatch):
  job, blocks = FakeJob(), []
  result = engine.run(job, X, batch_size=7, block_size=30, progress=False,
                      on_block=blocks.append)
  assert result["log_px"] == pytest.approx(sum(X) / 100) and result["n"] == 100
  assert sorted(job.rows_seen) == list(range(100))
  assert [b["done"] for b in blocks] == [30, 60, 90, 100]
  assert blocks[-1]["totals"]["log_px"] == pytest.approx(sum(X))


def test_a_resumed_run_continues_after_the_kept_rows_with_the_same_result():
  blocks = []
  whole = engine.run(FakeJob(), X, batch_size=10, block_size=25, progress=False,
                     on_block=blocks.append)
  job = FakeJob()
  resumed = engine.run(job, X, batch_size=10, block_size=25, progress=False,
                       resume=blocks[1])  # two blocks kept
  assert min(job.rows_seen) == 50 and resumed == whole


def test_a_stop_raises_after_the_call_and_says_what_is_kept():
  polls = []

  def stop():
    polls.append(1)
    return len(polls) >= 3
  with pytest.raises(engine.EvaluationStopped, match="stopped after 0 of 100 examples"
                     r".*the finished blocks are kept"):
    # 2 s a step: a call is one step, four calls a batch of rows.
    engine.run(FakeJob(unit=2.0), X, batch_size=10, block_size=50, progress=False, stop=stop,
               on_block=lambda b: None)
  assert len(polls) == 3  # polled after each call, not only between blocks
  with pytest.raises(engine.EvaluationStopped, match="nothing is kept"):
    engine.run(FakeJob(), X, batch_size=10, block_size=50, progress=False,
               stop=lambda: True)


def test_calls_are_sized_to_the_poll_interval(monkeypatch):
  monkeypatch.setattr(engine, "POLL_SECONDS", 2.0)
  # 0.5 s a step of 4: a call takes 4 steps (2 s) and rows do not grow.
  assert engine._call_sizes(FakeJob(steps=4), 0.5, 10, 100) == (10, 4)
  # 1/64 s a step: whole rows take 1/16 s, so a call takes 32 times the rows (capped).
  assert engine._call_sizes(FakeJob(steps=4), 1 / 64, 10, 100) == (100, 4)
  assert engine._call_sizes(FakeJob(steps=4), 1 / 64, 10, 1000) == (320, 4)
  # 1 s a step of 100: a call takes 2 steps of the batch.
  assert engine._call_sizes(FakeJob(steps=100), 1.0, 10, 100) == (10, 2)
  job = FakeJob(steps=4, unit=0.5)
  engine.run(job, X[:20], batch_size=10, block_size=20, progress=False)
  assert {c[2] for c in job.calls} == {4}


def test_one_process_evaluates_every_row_and_its_sums_are_as_they_are():
  assert engine.process_share(10) == (0, 10)
  assert engine.sum_over_processes({"a": 1.5, "b": 2}) == {"a": 1.5, "b": 2.0}


def test_the_plan_and_progress_lines(monkeypatch, caplog):
  monkeypatch.setattr(engine, "PROGRESS_SECONDS", 0.0)
  with caplog.at_level("INFO"):
    engine.run(FakeJob(), X, batch_size=10, block_size=50, progress=True)
  lines = [r.getMessage() for r in caplog.records]
  assert lines[0] == "fake: 100 examples, about 4.0s"  # 0.1 s x 4 steps x 10 batches
  assert lines[1].startswith("fake: 50/100 examples, running mean 24.500 nats")
  assert lines[2].startswith("fake: 100/100 examples, running mean 49.500 nats")


def test_mean_and_stderr_and_durations():
  values = [1.0, 2.0, 4.0]
  mean, se = engine.mean_and_stderr(sum(values), sum(v * v for v in values), 3, ddof=1)
  assert mean == pytest.approx(7 / 3)
  assert se == pytest.approx((sum((v - 7 / 3) ** 2 for v in values) / 2 / 3) ** 0.5)
  assert engine.mean_and_stderr(1.0, 1.0, 1, ddof=1)[1] != engine.mean_and_stderr(
      1.0, 1.0, 1, ddof=1)[1]  # NaN: no spread from one value
  assert [engine.format_duration(s) for s in (45, 720, 11520)] == ["45s", "12 min", "3.2 h"]


@pytest.mark.parametrize("resume", [{"done": 500, "totals": {"log_px": -1.0, "sq": 1.0}},
                                    {"done": -100, "totals": {"log_px": -1.0, "sq": 1.0}},
                                    {"done": "30", "totals": {"log_px": -1.0, "sq": 1.0}},
                                    {"done": 35, "totals": {"log_px": -1.0, "sq": 1.0}},
                                    {"done": 30, "totals": {"log_px": float("inf"), "sq": 1.0}},
                                    {"done": 30, "totals": {"log_px": -1.0}},
                                    {"done": 30, "totals": [1, 2]}])
def test_kept_blocks_that_cannot_be_this_runs_start_afresh_with_one_line(resume, caplog):
  with caplog.at_level("WARNING"):
    result = engine.run(FakeJob(), X, batch_size=10, block_size=30, progress=False,
                        resume=resume)
  assert result["log_px"] == pytest.approx(np.mean(X))  # every row scored again
  assert [r.getMessage() for r in caplog.records if "starting afresh" in r.getMessage()]
