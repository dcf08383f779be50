"""End to end on a slice of real MNIST: files written, bound improved, resume
to the same numbers, clear errors for bad settings."""

import dataclasses
import json

import chex
import pytest

from tests import helpers
from vae_jax import hooks, runner



pytestmark = pytest.mark.slow  # whole runs of a few epochs

CONFIG = helpers.TINY  # the session's shape: its programs come compiled


@pytest.fixture(scope="module")
def small(tiny_data):
  return tiny_data


@pytest.fixture(scope="module")
def whole(reference_run):
  """CONFIG's run, uninterrupted (the session's reference run): (workdir, its last
  record). Read, never written, by the tests below."""
  return reference_run, helpers.run_metrics(reference_run)[-1]


def test_short_run_improves_the_bound_and_writes_every_file(whole):
  tmp_path, record = whole
  metrics = helpers.run_metrics(tmp_path)
  assert [m["epoch"] for m in metrics] == [1, 2, 3]
  assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"] + 5
  assert record == metrics[-1]
  for m in metrics:
    assert m["test_elbo"] == pytest.approx(m["test_reconstruction"] - m["test_kl"], abs=1e-3)
  for name in ("config.json", "reconstructions.png", "samples.png", "manifold.png",
               "latent_means.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert json.loads((tmp_path / "config.json").read_text())["latent_dim"] == 2
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1, 2, 3]


def test_tensorboard_shows_grouped_scalars_the_settings_and_no_duplicate_images(small, whole,
                                                                               tmp_path):
  """The events read back: train/, test/ and eval/ tags (the learning rate among them), the
  settings as text; running a finished run again adds no image events."""
  workdir = helpers.copy_run(whole[0], tmp_path / "copy")
  events = helpers.tensorboard_events(workdir / "tensorboard")
  tags = {v.tag for e in events for v in e.summary.value}
  assert {"train/elbo", "train/learning_rate", "test/elbo", "test/kl", "eval/active_units",
          "run/epoch_s"} <= tags, tags
  lr = [v.simple_value for e in events for v in e.summary.value if v.tag == "train/learning_rate"]
  assert lr == pytest.approx([CONFIG.learning_rate] * 3)
  text = [v for e in events for v in e.summary.value if v.tag.startswith("settings")]
  assert text and b"latent_dim" in text[0].tensor.string_val[0]
  images = lambda: sum(v.HasField("image") for e in helpers.tensorboard_events(
      workdir / "tensorboard") for v in e.summary.value)
  before = images()
  assert before > 0
  runner.train_and_evaluate(CONFIG, small, workdir)  # nothing to train
  assert images() == before


def test_resumed_run_equals_uninterrupted_run(small, whole, tmp_path):
  whole, parts = whole[0], tmp_path / "parts"
  runner.train_and_evaluate(dataclasses.replace(CONFIG, epochs=1), small, parts)
  runner.train_and_evaluate(CONFIG, small, parts)
  assert helpers.run_metrics(parts) == helpers.run_metrics(whole)
  a, b = runner.load_run(whole)[2], runner.load_run(parts)[2]
  chex.assert_trees_all_equal(a, b)


def test_another_prng_is_another_stream_that_resumes_alike(small, whole, tmp_path):
  philox = dataclasses.replace(CONFIG, prng="philox4x32")
  threefry, whole, parts = whole, tmp_path / "whole", tmp_path / "parts"
  runner.train_and_evaluate(philox, small, whole)
  runner.train_and_evaluate(dataclasses.replace(philox, epochs=1), small, parts)
  with pytest.raises(ValueError, match=r"other settings \(prng: 'philox4x32' there"):
    runner.train_and_evaluate(CONFIG, small, parts)  # the stream may not change mid-run
  runner.train_and_evaluate(philox, small, parts)
  assert helpers.run_metrics(parts) == helpers.run_metrics(whole)
  config, _, state, _ = runner.load_run(parts)
  assert config.prng == "philox4x32"
  chex.assert_trees_all_equal(state, runner.load_run(whole)[2])
  # Same seed, another generator (the default threefry's run): other draws, a bound as
  # good within the noise of 24 steps (about 8 nats between seeds at this size).
  a, b = helpers.run_metrics(whole)[-1], helpers.run_metrics(threefry[0])[-1]
  assert a["test_elbo"] != b["test_elbo"] and abs(a["test_elbo"] - b["test_elbo"]) < 25


def test_fresh_starts_over_and_other_settings_are_refused(small, reference_run, tmp_path):
  helpers.copy_run(reference_run, tmp_path)
  config = dataclasses.replace(CONFIG, epochs=1, beta=0.5)  # beta: an input, one program
  with pytest.raises(ValueError, match=r"holds a run with other settings \(beta: 1.0 there"):
    runner.train_and_evaluate(config, small, tmp_path)
  runner.train_and_evaluate(config, small, tmp_path, fresh=True)
  assert [m["epoch"] for m in helpers.run_metrics(tmp_path)] == [1]
  assert json.loads((tmp_path / "config.json").read_text())["beta"] == 0.5


def test_bad_settings(small, tmp_path):
  with pytest.raises(ValueError, match=r"batch_size=4096: larger than the 512"):
    runner.train_and_evaluate(dataclasses.replace(CONFIG, batch_size=4096), small, tmp_path)
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match="is a file"):
    runner.train_and_evaluate(CONFIG, small, tmp_path / "file")
  with pytest.raises(ValueError, match=r"prng=nope: expected one of"):
    runner.train_and_evaluate(dataclasses.replace(CONFIG, prng="nope"), small, tmp_path / "p")
  assert not (tmp_path / "p").exists()
  with pytest.raises(ValueError, match="binarize=sometimes"):
    runner.train_and_evaluate(dataclasses.replace(CONFIG, binarize="sometimes"), small, tmp_path)


def test_epochs_between_evaluations_say_where_the_run_is(small, tmp_path, monkeypatch, caplog):
  monkeypatch.setattr(hooks, "PROGRESS_SECONDS", 0.0)
  with caplog.at_level("INFO"):
    runner.train_and_evaluate(dataclasses.replace(CONFIG, epochs=3, eval_every=3), small,
                              tmp_path)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
  assert lines[0].startswith("epoch 1/3  train ELBO ") and lines[0].endswith(
      "(next evaluation after epoch 3)")
  assert lines[1].startswith("epoch 2/3  train ELBO ")
  assert lines[2].startswith("epoch 3/3  train ELBO ") and "test ELBO" in lines[2]
  assert [r["epoch"] for r in helpers.run_metrics(tmp_path)] == [3]


def test_seeds_train_replicas_equal_to_their_seeds_alone_and_resume_bit_for_bit(small, tmp_path):
  """--seeds=3: one vmapped program whose replica r matches the run of seed r trained
  alone (to float rounding: a batched matmul may round differently, by 1e-6 after an
  epoch, and training amplifies it), a metrics line with the mean and s.d. over the
  replicas, and a resumed run's numbers exactly the uninterrupted one's."""
  config = dataclasses.replace(CONFIG, epochs=1, seeds=3, seed=5)
  record = runner.train_and_evaluate(config, small, tmp_path / "three")
  replicas = record["replicas"]
  assert len(replicas) == 3 and record["epoch"] == 1
  elbos = [r["test_elbo"] for r in replicas]
  assert record["test_elbo"] == pytest.approx(sum(elbos) / 3, rel=1e-12)
  mean = sum(elbos) / 3
  sd = (sum((e - mean) ** 2 for e in elbos) / 2) ** 0.5
  assert record["test_elbo_sd"] == pytest.approx(sd, rel=1e-9) and sd > 0  # seeds differ
  for r, got in enumerate(replicas):
    alone = runner.train_and_evaluate(dataclasses.replace(config, seeds=1, seed=5 + r), small,
                                      tmp_path / f"alone{r}")
    for name in ("test_elbo", "test_kl", "train_elbo", "active_units", "step"):
      assert got[name] == pytest.approx(alone[name], rel=1e-5), (r, name)
  # Two epochs straight, and one epoch then the second resumed from its checkpoint.
  config = dataclasses.replace(config, epochs=2)
  whole = runner.train_and_evaluate(config, small, tmp_path / "whole")
  runner.train_and_evaluate(dataclasses.replace(config, epochs=1), small, tmp_path / "resumed")
  resumed = runner.train_and_evaluate(config, small, tmp_path / "resumed")
  strip = lambda rec: {k: v for k, v in rec.items() if k not in helpers.TIMING}
  assert [strip(r) for r in resumed["replicas"]] == [strip(r) for r in whole["replicas"]]
  _, _, state, epoch = runner.load_run(tmp_path / "resumed")
  assert epoch == 2 and state.step.shape == (3,)


def test_conditional_replicas_equal_their_seeds_alone_and_the_conv_host_loop_trains(small,
                                                                                     tmp_path):
  """--conditional with --seeds=2: the labels are batched with each replica's images, so
  replica r matches seed r alone; the conv model's host loop (a CPU) takes labelled
  batches too."""
  config = dataclasses.replace(CONFIG, epochs=1, seeds=2, conditional=True)
  record = runner.train_and_evaluate(config, small, tmp_path / "two")
  for r, got in enumerate(record["replicas"]):
    alone = runner.train_and_evaluate(dataclasses.replace(config, seeds=1, seed=r), small,
                                      tmp_path / f"alone{r}")
    for name in ("test_elbo", "test_kl", "train_elbo"):
      assert got[name] == pytest.approx(alone[name], rel=1e-5), (r, name)
  conv = dataclasses.replace(CONFIG, epochs=1, model="conv", conditional=True,
                             conv_channels=(8, 16), conv_hidden=32)
  record = runner.train_and_evaluate(conv, small, tmp_path / "conv")
  assert record["test_elbo"] > -550 and record["epoch"] == 1


def test_a_finished_run_keeps_its_record_and_a_resume_records_each_segment(small, reference_run,
                                                                           tmp_path, caplog):
  """A changed setting that trains nothing leaves config.json alone; a resumed run with a
  changed learning rate records from which epoch each value held (config.json's segments,
  the first metrics line of the new segment, load_run's log)."""
  run = helpers.copy_run(reference_run, tmp_path / "run")
  before = (run / "config.json").read_text()
  with caplog.at_level("WARNING"):
    runner.train_and_evaluate(dataclasses.replace(CONFIG, learning_rate=3e-4), small, run)
  assert (run / "config.json").read_text() == before
  assert any("is finished (3 epochs): learning_rate=0.0003 trained nothing" in r.getMessage()
             for r in caplog.records)
  slower = dataclasses.replace(CONFIG, learning_rate=3e-4, epochs=4)
  runner.train_and_evaluate(slower, small, run)
  saved = json.loads((run / "config.json").read_text())
  first = {"from_epoch": 0, "learning_rate": 1e-3, "keep_checkpoints": 3, "eval_every": 1}
  assert saved["learning_rate"] == 3e-4 and len(saved["segments"]) == 2
  assert first.items() <= saved["segments"][0].items()
  assert saved["segments"][1] == {"from_epoch": 3, "learning_rate": 3e-4}
  metrics = helpers.run_metrics(run)
  assert metrics[-1]["settings_changed"] == {"learning_rate": 3e-4}
  assert metrics[-1]["learning_rate"] == pytest.approx(3e-4)
  assert all("settings_changed" not in m for m in metrics[:-1])
  runner.train_and_evaluate(dataclasses.replace(slower, epochs=5), small, run)  # same values
  assert json.loads((run / "config.json").read_text())["segments"] == saved["segments"]
  assert "settings_changed" not in helpers.run_metrics(run)[-1]
  with caplog.at_level("INFO"):
    config, _, _, epoch = runner.load_run(run)
  assert config.learning_rate == 3e-4 and epoch == 5
  assert any("from epoch 3 the run trained with learning_rate=0.0003" in r.getMessage()
             for r in caplog.records)


class _StopAt(hooks.PeriodicAction):
  """A researcher's own action: notes every epoch (and what the loop hands it), stops
  the run after epoch `at`."""

  def __init__(self, at=None):
    super().__init__(every_epochs=1)
    self.at, self.seen = at, []

  def run(self, loop, end):
    self.seen.append((end.epoch, sorted(end.metrics), loop.record.get("epoch")))
    if end.epoch == self.at:
      loop.stop(f"the action's own reason at epoch {end.epoch}")


def test_your_action_sees_every_epoch_stops_the_run_and_it_resumes_right(small, whole,
                                                                         tmp_path, caplog):
  """Stopped by an action after epoch 1, between evaluations (eval_every=2): the epoch is
  evaluated and saved all the same, and the resumed run ends where the uninterrupted one
  does."""
  every_other = dataclasses.replace(CONFIG, eval_every=2)
  first = _StopAt(at=1)
  with caplog.at_level("INFO"):
    runner.train_and_evaluate(every_other, small, tmp_path, hooks=(first,))
  assert [(e, r) for e, _, r in first.seen] == [(1, None)]  # before the stop's evaluation
  assert "elbo" in first.seen[0][1]
  assert "Stopping after epoch 1: the action's own reason at epoch 1" in caplog.text
  assert [m["epoch"] for m in helpers.run_metrics(tmp_path)] == [1]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1]
  second = _StopAt()
  runner.train_and_evaluate(every_other, small, tmp_path, hooks=(second,))
  assert [(e, r) for e, _, r in second.seen] == [(2, 2), (3, 3)]  # after the built-in ones
  assert helpers.run_metrics(tmp_path) == helpers.run_metrics(whole[0])
  chex.assert_trees_all_equal(runner.load_run(tmp_path)[2], runner.load_run(whole[0])[2])


def test_early_stopping_names_the_best_epoch_keeps_its_checkpoint_and_a_rerun_trains_no_more(
    small, whole, tmp_path, caplog):
  """Watching a figure that stalls at once (the active units: 2 of 2 from epoch 1)."""
  config = dataclasses.replace(CONFIG, early_stopping_patience=1, keep_checkpoints=2,
                               early_stopping_metric="active_units")
  with caplog.at_level("INFO"):
    runner.train_and_evaluate(config, small, tmp_path)
  reason = ("early stopping: active_units has not improved for 1 evaluations; the best, "
            "2.0000, is epoch 1's, whose checkpoint is kept (--epoch=1 evaluates it)")
  assert f"Stopping after epoch 2: {reason}" in caplog.text
  assert helpers.run_metrics(tmp_path) == helpers.run_metrics(whole[0])[:2]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1, 2]
  caplog.clear()
  with caplog.at_level("INFO"):
    runner.train_and_evaluate(config, small, tmp_path)  # the same command again
  assert f"Nothing to train in {tmp_path} after epoch 2: {reason}" in caplog.text
  assert [m["epoch"] for m in helpers.run_metrics(tmp_path)] == [1, 2]
  with pytest.raises(ValueError, match="raise keep_checkpoints to 4"):
    dataclasses.replace(config, early_stopping_patience=3)


def test_a_config_json_whose_sizes_need_more_memory_than_is_free_is_one_line(reference_run,
                                                                             tmp_path, capfd):
  """Huge sizes in config.json reached the allocation, with advice naming evaluate's
  flags; now the loading says what needs the memory and where to repair it."""
  workdir = helpers.copy_run(reference_run, tmp_path / "run")
  record = json.loads((workdir / "config.json").read_text())
  record["hidden_sizes"] = [10 ** 8]
  (workdir / "config.json").write_text(json.dumps(record))
  with pytest.raises(ValueError, match=r"config.json's model needs about \d+\.\d\d GiB for its "
                                       r"parameters and optimizer state, but .* GiB are free; "
                                       r"repair its sizes or pass another workdir"):
    runner.load_run(workdir)
  code, err = helpers.cli(capfd, "experiments.evaluate", f"--workdir={workdir}", "--method=elbo")
  line = err.strip().splitlines()[-1]
  assert code == 1 and line.startswith("error: ") and "repair its sizes or pass another --workdir" in line, err[-2000:]
  assert "Traceback" not in err and "iwae_batch_size" not in line


def test_a_resumed_run_leaves_one_tensorboard_event_per_epoch(small, reference_run, tmp_path):
  """Killed after epoch 3's events but before its checkpoint, the run retrains epoch 3:
  TensorBoard's purge hid the first copy, the raw files held both."""
  workdir = helpers.copy_run(reference_run, tmp_path / "run")
  helpers.truncate_run(workdir, 2)
  steps = lambda: [e.step for e in helpers.tensorboard_events(workdir / "tensorboard")
                   for v in e.summary.value if v.tag == "test/elbo"]
  assert steps() == [1, 2, 3]  # the killed sitting's epoch 3
  runner.train_and_evaluate(CONFIG, small, workdir)
  assert steps() == [1, 2, 3]
  assert helpers.run_metrics(workdir) == helpers.run_metrics(reference_run)
