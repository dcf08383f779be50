"""Faults and bad input: what the user sees, and that no work is lost.

Bad inputs and faults tried here and in the tests they point to (95 in all):
  flags (test_experiments.py, 17): --L=0, --latent_dim=0, --estimator=exact,
    --binarize=sometimes, --learning_rate=-1, --learning_rate=inf, --beta=nan,
    --latent_dims=2,five, --latent_dims=2,2, --hidden_sizes=0, --seed=-1,
    --seed=2**63, --batch_size larger than the data, --preset=nope, a positional
    argument, --workdir a file, data missing offline;
  data (test_data.py, 9): missing directory (offline), missing file, truncated
    gzip, wrong magic, wrong item count, wrong size, checksum mismatch, a
    corrupt download, a Frey Face file without `ff` (and a non-MATLAB one);
  workdir (test_runner.py, test_workdir.py, 4): another run's settings in the
    workdir, /proc/x (cannot be created: the real reason), a directory that cannot
    be written, config.json never given a non-finite number;
  here (18): NaN/inf from a huge learning rate (stop; skip with
    --skip_nonfinite; stop when an epoch skips every step), SIGKILL in the
    middle of an epoch, a half-written checkpoint left by a kill, SIGTERM,
    SIGINT, a disk too small to start on, a disk that fills up mid-run, the
    same seed twice (bitwise determinism), a second run on a workdir in use
    (and a killed holder that must not block), the latest checkpoint with a
    flipped bit, truncated, or emptied (fall back to the newest intact one),
    config.json deleted then a resume with other settings (nothing rewritten),
    a torn last line and a damaged line in metrics.jsonl, a broken config.json,
    a checkpoint written before checksums (restored unverified, with a warning);
  checkpoints (test_checkpoint.py, 9): an epoch record edited (not its directory's;
    not what the checksum covered), a step counter that disagrees with its epoch,
    the save after a fallback (replaces the damaged one), an intact checkpoint never
    replaced silently, a checkpoint rotated away while read, each of three index
    files missing (one line, no asyncio tracebacks), a torn metrics line whose
    checkpoint exists (written again);
  data, second pass (test_data.py, 4): Frey Face as uint16, as floats outside
    [0, 1], with a NaN pixel, with 5 frames;
  likelihoods (test_distributions.py, 1): 8-bit levels 0..255 given to the
    discretized logistic (refused; NaN under jit);
  multi-host (test_multihost.py, 2): a coordinator that never answers; a process killed
    mid-run (the other stops within --peer_timeout with one line; both resume);
  third pass, here and beside (14): --L too large for memory (refused before the
    first step by XLA's count), then the corrected command on that workdir (not
    blocked: nothing was saved), --workdir=~/run (expanded), Ctrl-C before the first
    epoch, Ctrl-C at five moments after config.json appears (never swallowed), a
    restore into other shapes (one line, no teardown noise), the k-sample
    evaluation's memory for k = 1e8 (bounded) and a chunk too large (refused up
    front; test_evaluate.py), a workdir that cannot be written (test_workdir.py),
    SIGINT during a k = 10^6 evaluation (its time estimated first, stopped within
    seconds);
  data sources (test_datasets.py, 13): an .npz missing, without 'test', of rank 1,
    of int64, of floats outside [0, 1], with NaN, with splits unlike each other,
    empty, not an .npz; an image folder missing, empty, with a corrupt PNG, with
    images of another size;
  entry point (test_experiments.py, 6): --dataset=npz without --data_path,
    --dataset=tfds without --tfds_name, --workdir='', --prng=nope (not one of
    JAX's generators), --model=big, --model=no_such_module:build. (--model=two_layer alone now
    trains: it takes the estimator its KL needs.)
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import dataclasses

import chex
import jax
import numpy as np
import pytest

from tests import helpers
from vae_jax import checkpoint, runner
from vae_jax import workdir as workdir_lib

# Every test here trains for seconds (slow); those that start processes and send them
# signals are the system tier.
pytestmark = pytest.mark.slow
system = pytest.mark.system

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Not the session's tiny shape: enough data that an epoch lasts a moment, so a signal
# lands mid-run.
CLI = ["--train_examples=8192", "--test_examples=500", "--hidden_sizes=64", "--latent_dim=4",
       "--batch_size=64"]
CONFIG = dataclasses.replace(helpers.TINY, epochs=2)
STEPS = helpers.TINY_TRAIN // CONFIG.batch_size  # an epoch's


@pytest.fixture(scope="module")
def small(tiny_data):
  return tiny_data


@pytest.fixture
def two_epochs(reference_run, tmp_path):
  """A copy of the session's reference run as it stood after CONFIG's 2 epochs."""
  helpers.copy_run(reference_run, tmp_path)
  helpers.truncate_run(tmp_path, 2)
  return tmp_path


def _restore(workdir):
  """(epoch, TrainState) of the workdir's latest checkpoint."""
  _, _, state, epoch = runner.load_run(workdir)
  return epoch, state


def _finite(state):
  return all(bool(np.all(np.isfinite(p))) for p in jax.tree_util.tree_leaves(state.params))


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(small, two_epochs):
  tmp_path = two_epochs
  blown = runner.RunConfig(**{**CONFIG.__dict__, "learning_rate": 1e7, "epochs": 4})
  with pytest.raises(runner.NonFiniteError, match=r"non-finite loss or gradient at step \d+ "
                     r"\(epoch 3\).*checkpoint of epoch 2 is the last good one"):
    runner.train_and_evaluate(blown, small, tmp_path)
  epoch, state = _restore(tmp_path)
  assert epoch == 2 and _finite(state)
  assert [m["epoch"] for m in helpers.run_metrics(tmp_path)] == [1, 2]
  # With --skip_nonfinite the run goes on, counting what it skipped, until an
  # epoch skips every one of its steps: then it stops as a NaN run does.
  skipping = runner.RunConfig(**{**blown.__dict__, "skip_nonfinite": True})
  with pytest.raises(runner.NonFiniteError, match=f"every one of the {STEPS} steps of epoch 4"):
    runner.train_and_evaluate(skipping, small, tmp_path)
  last = helpers.run_metrics(tmp_path)[-1]
  assert last["epoch"] == 3 and last["skipped_steps"] > 0
  assert _finite(_restore(tmp_path)[1])


def test_same_seed_gives_bitwise_identical_runs(small, reference_run, tmp_path):
  runner.train_and_evaluate(helpers.TINY, small, tmp_path / "a")
  assert helpers.run_metrics(tmp_path / "a") == helpers.run_metrics(reference_run)
  (_, a), (_, b) = _restore(tmp_path / "a"), _restore(reference_run)
  chex.assert_trees_all_equal(a, b)


def _start(workdir, data_root, *args):
  env = dict(os.environ, VAE_JAX_DATA=str(data_root))
  return subprocess.Popen([sys.executable, "-m", "experiments.mnist", *CLI, *args,
                           f"--workdir={workdir}"], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path: pathlib.Path, proc, timeout=300):
  t0 = time.time()
  while not path.exists():
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    assert time.time() - t0 < timeout
    time.sleep(0.05)


def _resume(capfd, workdir, *args) -> str:
  """The same command again, in this process (what is under test is the run that was
  stopped, and the checkpoint it left): its stderr."""
  code, err = helpers.cli(capfd, "experiments.mnist", *CLI, *args, f"--workdir={workdir}")
  assert code == 0, err[-2000:]
  return err


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
  """The CLI run of 4 epochs, in this process."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  assert helpers.main("experiments.mnist", *CLI, "--epochs=4", f"--workdir={workdir}") == 0
  return workdir


@system
def test_sigkill_mid_run_resumes_to_identical_numbers(uninterrupted, data_root, tmp_path, capfd):
  proc = _start(tmp_path, data_root, "--epochs=4")
  _wait_for(tmp_path / "checkpoints" / "1", proc)
  proc.send_signal(signal.SIGKILL)  # in epoch 2 or while saving its checkpoint
  proc.communicate()
  # A checkpoint that a kill left half-written must be ignored, not restored.
  (tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-0").mkdir()
  (tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-0" / "junk").write_text("partial")
  assert "Resuming from the checkpoint of epoch" in _resume(capfd, tmp_path, "--epochs=4")
  assert helpers.run_metrics(tmp_path) == helpers.run_metrics(uninterrupted)
  (ea, a), (eb, b) = _restore(tmp_path), _restore(uninterrupted)
  assert ea == eb == 4
  chex.assert_trees_all_equal(a, b)


@system
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_saves_and_exits_cleanly(sig, uninterrupted, data_root, tmp_path, capfd):
  proc = _start(tmp_path, data_root, "--epochs=4")
  _wait_for(tmp_path / "checkpoints" / "1", proc)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert f"{sig.name}: stopping after epoch" in err
  done = len(helpers.run_metrics(tmp_path))
  assert done < 4 and _restore(tmp_path)[0] == done
  _resume(capfd, tmp_path, "--epochs=4")
  assert helpers.run_metrics(tmp_path) == helpers.run_metrics(uninterrupted)


@pytest.fixture
def small_disk(tmp_path):
  """A 300 kB tmpfs: too small for one checkpoint of the CLI model (~600 kB)."""
  mnt = tmp_path / "small_disk"
  mnt.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
                    capture_output=True).returncode:
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  yield mnt
  subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_is_refused_before_any_work(data_root, small_disk, capfd):
  code, err = helpers.cli(capfd, "experiments.mnist", *CLI, "--epochs=2",
                          f"--workdir={small_disk / 'run'}")
  assert code == 1
  line = err.strip().splitlines()[-1]
  assert line.startswith("error: --workdir=") and "MB free" in line, err[-2000:]
  assert not (small_disk / "run" / "checkpoints").exists()


def test_disk_filling_up_mid_run_is_one_line_and_no_record_without_its_checkpoint(
    data_root, small_disk, monkeypatch, capfd):
  """A save the disk has no room for is refused before orbax's threads write (their
  failures printed 300-500 lines and "the last complete one is epoch None")."""
  monkeypatch.setattr(workdir_lib, "check_disk_space", lambda *a: None)  # filled after it
  code, err = helpers.cli(capfd, "experiments.mnist", *helpers.TINY_FLAGS,
                          f"--workdir={small_disk / 'run'}")
  lines = err.strip().splitlines()
  assert code == 1 and "Traceback" not in err and len(lines) < 10, err[-3000:]
  assert re.fullmatch(r"error: could not write the checkpoint of epoch 1 in .*small_disk.*: it "
                      r"needs about \d+\.\d MB and 0\.\d MB are free; no checkpoint is "
                      r"complete yet\. Free some space or pass another --workdir, then run "
                      r"again to resume", lines[-1]), lines[-1]
  assert helpers.run_metrics(small_disk / "run") == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_save_that_fails_while_written_keeps_earlier_checkpoints_and_no_line_of_its_own(
    small, small_disk, monkeypatch):
  # Past both checks, as if the disk filled up while orbax wrote.
  monkeypatch.setattr(workdir_lib, "check_disk_space", lambda *a: None)
  monkeypatch.setattr(checkpoint.Checkpointer, "_check_space", lambda *a: None)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"could not write a checkpoint in .*small_disk.*No space left on "
                           r"device.*no checkpoint is complete yet"):
    runner.train_and_evaluate(CONFIG, small, small_disk / "run")
  leftovers = [p.name for p in (small_disk / "run" / "checkpoints").iterdir()]
  assert not [n for n in leftovers if "tmp" in n or n.isdigit()], leftovers
  assert helpers.run_metrics(small_disk / "run") == []


@system
def test_a_second_run_on_a_locked_workdir_exits_at_once_and_a_killed_holder_does_not_block(
    data_root, tmp_path, capfd):
  first = _start(tmp_path, data_root, "--epochs=40")
  try:
    _wait_for(tmp_path / "checkpoints" / "1", first)
    t0 = time.time()
    code, err = helpers.cli(capfd, "experiments.mnist", *CLI, "--epochs=40",
                            "--learning_rate=0.01", f"--workdir={tmp_path}")
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"is in use by PID {first.pid} on " in line, line
    assert time.time() - t0 < 60
    # The refused run changed nothing: the first run's settings stand.
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.001
  finally:
    first.send_signal(signal.SIGKILL)
    first.communicate()
  # The kernel released the dead holder's lock: the same command resumes.
  _resume(capfd, tmp_path, "--epochs=2")


def _largest_array_file(checkpoint_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in checkpoint_dir.rglob("*") if p.is_file() and "/d/" in str(p)]
  return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["bit_flip", "truncate", "empty_dir"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(damage, small, two_epochs,
                                                                       caplog):
  tmp_path = two_epochs  # checkpoints 1 and 2
  latest = tmp_path / "checkpoints" / "2"
  if damage == "bit_flip":
    target = _largest_array_file(latest)
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    target.write_bytes(bytes(raw))
  elif damage == "truncate":
    target = _largest_array_file(latest)
    target.write_bytes(target.read_bytes()[:len(target.read_bytes()) // 3])
  else:
    shutil.rmtree(latest)
    latest.mkdir()
  with caplog.at_level("WARNING"):
    runner.train_and_evaluate(runner.RunConfig(**{**CONFIG.__dict__, "epochs": 3}), small,
                              tmp_path)
  warned = [r.getMessage() for r in caplog.records if "damaged or incomplete" in r.getMessage()]
  assert len(warned) == 1 and warned[0].startswith("Checkpoint 2 in "), warned
  # Resumed from epoch 1: epochs 2 and 3 ran again, and the damaged one was never deleted
  # by hand (orbax's own retention may replace it with the new epoch 2).
  assert [m["epoch"] for m in helpers.run_metrics(tmp_path)] == [1, 2, 3]
  assert _restore(tmp_path)[0] == 3 and _finite(_restore(tmp_path)[1])


def test_config_is_only_rewritten_once_a_resume_works(small, two_epochs):
  tmp_path = two_epochs
  (tmp_path / "config.json").unlink()
  with pytest.raises(checkpoint.CheckpointError, match="holds arrays of other shapes than this model"):
    runner.train_and_evaluate(runner.RunConfig(**{**CONFIG.__dict__, "latent_dim": 5}), small,
                              tmp_path)
  assert not (tmp_path / "config.json").exists()
  # The original settings resume (and write config.json again).
  runner.train_and_evaluate(runner.RunConfig(**{**CONFIG.__dict__, "epochs": 3}), small, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["latent_dim"] == CONFIG.latent_dim


def test_torn_metrics_line_is_dropped_and_damage_is_named(small, two_epochs, caplog):
  tmp_path = two_epochs
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"epoch": 3, "step"')  # a kill while appending
  with caplog.at_level("WARNING"):
    runner.train_and_evaluate(runner.RunConfig(**{**CONFIG.__dict__, "epochs": 3}), small,
                              tmp_path)
  assert any("dropping its last line" in r.getMessage() for r in caplog.records)
  assert [m["epoch"] for m in helpers.run_metrics(tmp_path)] == [1, 2, 3]
  lines = path.read_text().splitlines()
  path.write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
  with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is damaged"):
    runner.train_and_evaluate(runner.RunConfig(**{**CONFIG.__dict__, "epochs": 4}), small,
                              tmp_path)
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match=r"config.json: not valid JSON"):
    runner.train_and_evaluate(CONFIG, small, tmp_path)


def test_an_epoch_whose_every_step_was_skipped_stops(small, tmp_path):
  config = runner.RunConfig(**{**CONFIG.__dict__, "learning_rate": 1e6, "skip_nonfinite": True,
                               "epochs": 3})
  with pytest.raises(runner.NonFiniteError, match=rf"every one of the {STEPS} steps of epoch \d"):
    runner.train_and_evaluate(config, small, tmp_path)


def test_a_checkpoint_without_checksum_from_an_older_version_restores_unverified(
    two_epochs, caplog):
  tmp_path = two_epochs
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  epoch, state = ckpt.restore(_restore(tmp_path)[1], jax.random.key(CONFIG.seed))
  # What the previous version wrote: the same item without "sha256".
  item = {"state": state._asdict(), "epoch": np.asarray(3, np.int32),
          "root_key": np.asarray(jax.random.key_data(jax.random.key(CONFIG.seed)))}
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt._manager.save(3, args=ocp.args.StandardSave(item))  # pylint: disable=protected-access
  ckpt.close()
  with caplog.at_level("WARNING"):
    got_epoch, got = checkpoint.Checkpointer(tmp_path / "checkpoints").restore(
        state, jax.random.key(CONFIG.seed))
  assert got_epoch == 3
  assert any("has no checksum" in r.getMessage() for r in caplog.records)
  chex.assert_trees_all_equal(got, state)


def test_a_run_that_saved_no_checkpoint_does_not_block_the_corrected_command(small, tmp_path):
  # A setting too large for memory is refused before the first step (XLA's own count).
  too_big = runner.RunConfig(**{**CONFIG.__dict__, "num_samples": 100_000, "batch_size": 512})
  with pytest.raises(ValueError, match=r"a training step needs about .* GiB \(num_samples=100000, "
                                       r"batch_size=512\).*lower num_samples or batch_size"):
    runner.train_and_evaluate(too_big, small, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["num_samples"] == 100_000
  # It saved nothing, so the corrected command starts there (no --fresh needed).
  runner.train_and_evaluate(CONFIG, small, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["num_samples"] == 1


def _cli(data_root, *args, env=None, module="experiments.mnist", timeout=300):
  env = dict(os.environ, VAE_JAX_DATA=str(data_root), **(env or {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_workdir_with_a_tilde_goes_to_the_home_directory(data_root, tmp_path, capfd,
                                                         monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  code, err = helpers.cli(capfd, "experiments.mnist", *helpers.TINY_FLAGS, "--epochs=1",
                          "--workdir=~/run")
  assert code == 0, err[-1500:]
  assert (tmp_path / "run" / "metrics.jsonl").is_file() and not (ROOT / "~").exists()


@system
def test_ctrl_c_before_the_first_epoch_is_one_line(data_root, tmp_path):
  env = dict(os.environ, VAE_JAX_DATA=str(data_root))
  proc = subprocess.Popen([sys.executable, "-m", "experiments.mnist", *CLI, "--epochs=3",
                           f"--workdir={tmp_path}"], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  t0 = time.time()
  # Wait for the data set to start loading, then interrupt.
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if "Loading the data set" in line or time.time() - t0 > 120:
      break
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  err = "".join(lines) + err
  assert proc.returncode == 130, err[-2000:]
  assert err.strip().splitlines()[-1].startswith("error: interrupted")
  assert "Traceback" not in err


def test_restoring_into_other_shapes_is_one_clear_line(reference_run, data_root, tmp_path):
  run = helpers.copy_run(reference_run, tmp_path / "run")
  (run / "config.json").unlink()
  flags = [f for f in helpers.TINY_FLAGS if not f.startswith("--latent_dim")]
  out = _cli(data_root, *flags, "--epochs=5", "--latent_dim=5", f"--workdir={run}")
  assert out.returncode == 1
  assert "holds arrays of other shapes than this model" in out.stderr.strip().splitlines()[-1]
  assert "Traceback" not in out.stderr and out.stderr.count("Event loop is closed") == 0


@system
def test_evaluation_estimates_its_time_first_and_stops_within_seconds_on_sigint(
    reference_run, data_root, tmp_path):
  run = helpers.copy_run(reference_run, tmp_path / "run")
  env = dict(os.environ, VAE_JAX_DATA=str(data_root))
  # k = 10^6 on 500 images: hours of work, in calls of about 2 s.
  proc = subprocess.Popen([sys.executable, "-m", "experiments.evaluate", f"--workdir={run}",
                           "--k=1000000", "--test_examples=500", "--large_L=2"],
                          cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if "in all (a chunk of" in line:  # the estimate, before any block has run
      break
  assert not any("examples, running mean" in l for l in lines)
  estimate = lines[-1]
  assert "k=1000000 on 500 examples: about " in estimate, "".join(lines)[-1500:]
  time.sleep(1.0)
  proc.send_signal(signal.SIGINT)
  t0 = time.time()
  _, err = proc.communicate(timeout=120)
  assert time.time() - t0 < 20  # a call lasts about 2 s; then the stop is seen
  last = err.strip().splitlines()[-1]
  assert proc.returncode == 130 and "stopped after" in last, err[-1500:]
  assert last.startswith("W") and "] log p(x)" in last, last  # a warning, as training's stop
  assert "the finished blocks are kept. Run the same command again to continue" in last
  assert not (run / "evaluation.json").exists()
  # What it finished is kept for the same command to continue: both ELBO passes.
  kept = json.loads((run / "evaluation.partial.json").read_text())
  assert set(kept["results"]) == {"elbo_L1", "elbo_L2"}
  assert kept["settings"]["k"] == 1000000


@system
def test_ctrl_c_while_a_long_flow_is_built_ends_the_run_within_a_second(data_root, tmp_path):
  """A 256-step IAF's state takes minutes to build (compiling its init, cold); Ctrl-C
  there once waited for the build and then the epoch's compile."""
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.mnist", *CLI, "--posterior=iaf", "--flow_steps=256",
       f"--workdir={tmp_path / 'run'}"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, env=dict(os.environ, VAE_JAX_DATA=str(data_root),
                                       JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla")))
  _wait_for(tmp_path / "run" / ".lock", proc)
  time.sleep(1.0)
  assert proc.poll() is None
  sent = time.time()
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert time.time() - sent < 3.0 and proc.returncode == 130, err[-1500:]
  assert err.strip().splitlines()[-1].startswith("error: interrupted"), err[-1500:]
  assert not (tmp_path / "run" / "config.json").exists()  # ended inside the build
  assert "Traceback" not in err and "Compiling the training epoch" not in err


@system
@pytest.mark.parametrize("delay", [0.0, 0.3, 0.6, 0.9, 1.5])
def test_ctrl_c_at_any_moment_after_the_config_is_written_is_never_swallowed(delay, data_root,
                                                                            tmp_path):
  # Ctrl-C while the epoch compiles once vanished inside XLA's garbage-collector
  # callback, and the run trained every epoch. Now it ends the run, or stops it after
  # the epoch under way with its checkpoint.
  proc = _start(tmp_path, data_root, "--epochs=200")
  _wait_for(tmp_path / "config.json", proc)
  time.sleep(delay)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  done = len(helpers.run_metrics(tmp_path)) if (tmp_path / "metrics.jsonl").exists() else 0
  assert done < 200, err[-1500:]
  if proc.returncode == 130:
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err[-1500:]
  else:
    assert proc.returncode == 0 and "SIGINT: stopping after epoch" in err, err[-1500:]
  assert "Exception ignored" not in err and "Traceback" not in err
