"""The workdir: atomic writes, the reasons a directory cannot be used, the lock, the
settings check before a resume, metrics.jsonl's damage handling, and signals as
requests to stop."""

import json
import os
import pathlib
import signal
import threading
import time

import pytest

from vae_jax import workdir as W


def test_write_atomic_replaces_whole_files_only(tmp_path):
  path = tmp_path / "a.json"
  W.write_atomic(path, "one")
  W.write_atomic(path, "two")
  assert path.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_an_unusable_workdir_is_refused_with_its_real_reason(tmp_path):
  with pytest.raises(OSError, match=r"workdir=/proc/x: cannot create it \(No such file"):
    W.check_disk_space(pathlib.Path("/proc/x"), 1)
  read_only = tmp_path / "ro"
  read_only.mkdir()
  os.chmod(read_only, 0o500)
  try:
    if not os.access(read_only, os.W_OK):  # root ignores permission bits
      with pytest.raises(OSError, match="cannot create it|cannot write there"):
        W.check_disk_space(read_only / "run", 1)
  finally:
    os.chmod(read_only, 0o700)
  with pytest.raises(ValueError, match=r"MB free on its disk, but checkpoints of this model need"):
    W.check_disk_space(tmp_path / "run", 1 << 60)
  W.check_disk_space(tmp_path / "run", 1)
  assert (tmp_path / "run").is_dir()
  (tmp_path / "f").write_text("")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    W.check_is_dir(tmp_path / "f")


def test_the_lock_admits_one_run_and_names_the_holder(tmp_path):
  with W.Lock(tmp_path):
    with pytest.raises(W.WorkdirBusy, match=f"is in use by PID {os.getpid()} on "):
      with W.Lock(tmp_path):
        pass
  with W.Lock(tmp_path):  # released on exit
    pass


def _settings(**kw):
  return {"latent_dim": 2, "epochs": 3, "learning_rate": 1e-3, "data": {"train_examples": 10},
          **kw}


def test_prepare_refuses_other_settings_and_takes_resumable_ones(tmp_path):
  W.prepare(tmp_path, _settings(), {}, ("epochs", "learning_rate"), fresh=False)
  W.write_config(tmp_path, _settings())
  (tmp_path / "checkpoints" / "1").mkdir(parents=True)
  W.prepare(tmp_path, _settings(epochs=9, learning_rate=1e-4), {}, ("epochs", "learning_rate"),
            fresh=False)
  with pytest.raises(ValueError, match=r"holds a run with other settings \(latent_dim: 2 there, "
                                       r"5 now\)"):
    W.prepare(tmp_path, _settings(latent_dim=5), {}, ("epochs",), fresh=False)
  # A setting the old config.json predates is compared with its default.
  W.prepare(tmp_path, _settings(prng="threefry2x32"), {"prng": "threefry2x32"}, (), fresh=False)
  with pytest.raises(ValueError, match="prng: 'threefry2x32' there, 'philox4x32' now"):
    W.prepare(tmp_path, _settings(prng="philox4x32"), {"prng": "threefry2x32"}, (), fresh=False)
  W.prepare(tmp_path, _settings(latent_dim=5), {}, (), fresh=True)
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.json").exists()


def test_config_json_is_strict_json(tmp_path):
  with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
    W.write_config(tmp_path, {"learning_rate": float("inf")})
  assert not (tmp_path / "config.json").exists()
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="config.json: not valid JSON"):
    W.read_json(tmp_path / "config.json")


def test_metrics_torn_last_line_is_dropped_damage_elsewhere_named(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"epoch": e, "test_elbo": -100.0 + e}) for e in (1, 2)]
  path.write_text("\n".join(lines) + '\n{"epoch": 3, "te')
  with caplog.at_level("WARNING"):
    assert [r["epoch"] for r in W.read_metrics(path)] == [1, 2]
  assert any("dropping its last line" in r.getMessage() for r in caplog.records)
  path.write_text("\n".join([lines[0], "{broken", lines[1]]) + "\n")
  with pytest.raises(ValueError, match="metrics.jsonl: line 2 is damaged"):
    W.read_metrics(path)


def test_metrics_log_keeps_the_lines_up_to_the_resumed_epoch_and_restores_a_lost_one(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"epoch": e, "wall_s": 10.0 * e}) + "\n" for e in (1, 2, 3)))
  log = W.MetricsLog(tmp_path, 2)  # epoch 3 runs again
  assert [r["epoch"] for r in W.read_metrics(path)] == [1, 2] and log.wall_before == 20.0
  log.close()
  path.write_text(json.dumps({"epoch": 1, "wall_s": 10.0}) + "\n")  # epoch 2's line lost
  log = W.MetricsLog(tmp_path, 2, {"epoch": 2, "wall_s": 20.0})
  assert W.read_metrics(path) == [{"epoch": 1, "wall_s": 10.0}, {"epoch": 2, "wall_s": 20.0}]
  assert log.wall_before == 20.0
  log.close()


def test_stop_request_turns_signals_into_a_flag_and_restores_the_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with W.StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal == "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_ctrl_c_swallowed_while_the_model_was_built_is_a_stop_request():
  """The entry point's SIGINT handler counts a Ctrl-C that Python swallowed (raised in
  an XLA callback during the build); the run's stop request takes it over."""
  from experiments import errors  # pylint: disable=g-import-not-at-top
  counted = errors.Interrupts()
  previous = signal.signal(signal.SIGINT, counted)
  try:
    with W.StopRequest() as stop:
      assert stop.signal is None
    counted.count = 1
    with W.StopRequest() as stop:
      assert stop.signal == "SIGINT"
  finally:
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_python_could_not_raise_is_counted_not_printed(capsys):
  """A KeyboardInterrupt inside a garbage-collector callback is unraisable: the entry
  point's hook keeps it off stderr (it is counted, and raised at the next safe point);
  every other unraisable exception is still reported."""
  import gc  # pylint: disable=g-import-not-at-top
  from experiments import errors  # pylint: disable=g-import-not-at-top

  def interrupted(phase, info):
    del info
    if phase == "start":
      raise KeyboardInterrupt

  def body():
    gc.callbacks.append(interrupted)
    try:
      gc.collect()
    finally:
      gc.callbacks.remove(interrupted)
    os.kill(os.getpid(), signal.SIGINT)  # counted by the entry point's handler
  assert errors.run_under_policy(body, str) == 130
  err = capsys.readouterr().err
  assert "Exception ignored" not in err and err.startswith("error: interrupted"), err
  hook = errors._quiet_interrupts(lambda u: print("reported", type(u.exc_value).__name__))
  hook(type("Unraisable", (), {"exc_value": ValueError()})())
  hook(type("Unraisable", (), {"exc_value": KeyboardInterrupt()})())
  assert capsys.readouterr().out == "reported ValueError\n"


def test_markdown_table():
  assert W.markdown_table(["a", "b"], [[1, 2.345]]) == "| a | b |\n|---|---|\n| 1 | 2.35 |"


def test_evaluation_checks_its_workdir_is_writable_first(tmp_path):
  with pytest.raises(OSError, match="cannot write there"):
    W.check_writable(pathlib.Path("/proc"))  # read-only even for root
  W.check_writable(tmp_path)


def test_interruptible_returns_raises_and_ends_its_wait_on_a_stop_request():
  """A long call into C++ (here a sleep) cannot take a signal; the wait for it can."""
  assert W.interruptible(lambda a, b: a + b, 2, 3) == 5
  with pytest.raises(ValueError, match="bad"):
    W.interruptible(lambda: (_ for _ in ()).throw(ValueError("bad")))
  stop = W.StopRequest()
  threading.Timer(0.2, lambda: setattr(stop, "signal", "SIGINT")).start()
  t0 = time.perf_counter()
  with pytest.raises(KeyboardInterrupt):
    W.interruptible(time.sleep, 30.0, stop=stop)
  assert time.perf_counter() - t0 < 1.0


def test_trimmed_events_keep_the_steps_up_to_the_resumed_one_and_drop_a_torn_record(tmp_path):
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  writer = SummaryWriter(str(tmp_path))
  for step in (1, 2, 3):
    writer.add_scalar("test/elbo", -float(step), step)
  writer.close()
  (path,) = tmp_path.glob("events.out.tfevents.*")
  whole = path.read_bytes()
  path.write_bytes(whole + whole[:7])  # a record cut short by a kill
  W.trim_events(path, 2)
  steps = [e.step for e in helpers.tensorboard_events(tmp_path) for v in e.summary.value]
  assert steps == [1, 2] and whole.startswith(path.read_bytes())
  W.trim_events(path, 2)
  assert [e.step for e in helpers.tensorboard_events(tmp_path) if e.summary.value] == [1, 2]


def test_metrics_csv_has_a_column_per_figure_in_order_of_appearance():
  import csv, io  # pylint: disable=g-import-not-at-top,multiple-imports
  records = [{"epoch": 1, "test_elbo": -100.5}, {"epoch": 2, "test_elbo": -99.0,
                                                  "test_log_px_k5": -95.25,
                                                  "replicas": [{"test_elbo": -99.0}]}]
  rows = list(csv.DictReader(io.StringIO(W.metrics_csv(records))))
  assert list(rows[0]) == ["epoch", "test_elbo", "test_log_px_k5", "replicas"]
  assert rows[0] == {"epoch": "1", "test_elbo": "-100.5", "test_log_px_k5": "", "replicas": ""}
  assert rows[1]["test_log_px_k5"] == "-95.25"
  assert rows[1]["replicas"] == '[{"test_elbo": -99.0}]'
