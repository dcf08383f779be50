"""--distributed for real: two JAX processes on localhost (gloo CPU collectives),
each with one CPU device, against one process with two CPU devices."""

import json
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import helpers
from vae_jax import runner


ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGS = ["--train_examples=1024", "--test_examples=300", "--batch_size=64", "--hidden_sizes=64",
        "--latent_dim=8", "--eval_batch_size=128", "--log_grad_norm"]
TIMEOUT = 240


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, data_root) -> dict:
  return helpers.cpu_devices_env(devices, VAE_JAX_DATA=str(data_root))


def _two_processes(workdir, data_root, *extra, module="experiments.mnist", args=ARGS):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", module, "--distributed",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
       "--coordinator_timeout=60", f"--workdir={workdir}", *args, *extra],
      cwd=ROOT, env=_env(1, data_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT))
  finally:
    for p in procs:
      p.kill()
  return [(p.returncode, err) for p, (_, err) in zip(procs, outs)]


def _records(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _records_whole(workdir):
  """The whole lines of metrics.jsonl (a process stopped at once may have cut the last)."""
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()
          if l.endswith("}")]


def _params(workdir):
  return jax.tree_util.tree_leaves(runner.load_run(workdir)[2].params)


@pytest.mark.slow  # two JAX processes
@pytest.mark.system
def test_two_processes_stop_together_resume_and_equal_one_process_with_two_devices(
    data_root, tmp_path, capfd):
  """Two processes train until kill -9 of process 1: process 0 (blocked in a collective,
  or in one that fails) stops within 30 s with one line and exit 1, not XLA's abort
  (exit 134) a minute later; the same
  command on both resumes from the last checkpoint; the whole run then equals one
  process with two devices, and so does the evaluation shared out over the two."""
  two, one = tmp_path / "two", tmp_path / "one"
  port = _free_port()
  common = ["--distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
            "--coordinator_timeout=60", "--peer_timeout=5", f"--workdir={two}", *ARGS]
  procs = [subprocess.Popen([sys.executable, "-m", "experiments.mnist", *common,
                             f"--process_id={i}", "--epochs=500"],
                            cwd=ROOT, env=_env(1, data_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    deadline = time.monotonic() + TIMEOUT
    metrics = two / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
      assert time.monotonic() < deadline and procs[0].poll() is None, "no epoch was saved"
      time.sleep(0.2)
    procs[1].kill()
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=TIMEOUT)
    waited = time.monotonic() - killed
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode == 1
  last = err.strip().splitlines()[-1]
  # However the death shows (silence, or a collective whose connection reset): one line.
  assert last.startswith(("error: --distributed: process 1 stopped answering",
                          "error: --distributed: a collective with another process failed")
                         ), err[-3000:]
  assert "start all the processes again with the same command" in last
  assert "Traceback" not in err and "Fatal Python error" not in err, err[-3000:]
  assert waited < 30, waited
  done = runner.load_run(two)[3]  # the newest checkpoint
  # The same command on both processes resumes from the last checkpoint.
  before = [r for r in _records_whole(two) if r["epoch"] < done]
  epochs = done + 1
  results = _two_processes(two, data_root, f"--epochs={epochs}")
  for i, (code, err) in enumerate(results):
    assert code == 0, f"process {i}:\n{err[-3000:]}"
    assert f"Process {i} of 2: 1 local devices of 2" in err
  assert f"Resuming from the checkpoint of epoch {done}" in results[0][1]
  rec_two = _records(two)  # one metrics file, one line per epoch, written by process 0 only
  assert [r["epoch"] for r in rec_two] == list(range(1, epochs + 1))
  assert rec_two[:len(before)] == before
  assert rec_two[-1]["step"] == epochs * (1024 // 64)
  # One process with two devices, the same epochs at one go: the same numbers.
  single = subprocess.run([sys.executable, "-m", "experiments.mnist", f"--workdir={one}",
                           f"--epochs={epochs}", *ARGS], cwd=ROOT, env=_env(2, data_root),
                          capture_output=True, text=True, timeout=TIMEOUT)
  assert single.returncode == 0, single.stderr[-3000:]
  for a, b in zip(rec_two, _records(one), strict=True):
    for k in ("train_elbo", "test_elbo", "test_kl", "grad_norm"):
      np.testing.assert_allclose(a[k], b[k], rtol=2e-5, err_msg=k)
  for a, b in zip(_params(two), _params(one)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The k-sample evaluation shared out over the two processes: the mean of one process.
  eval_args = ["--k=20", "--large_L=2", "--test_examples=300"]
  results = _two_processes(two, data_root, module="experiments.evaluate", args=eval_args)
  assert all(code == 0 for code, _ in results), results[0][1][-3000:]
  shared = json.loads((two / "evaluation.json").read_text())
  # The same evaluation in one process with one device: this one's.
  code, err = helpers.cli(capfd, "experiments.evaluate", f"--workdir={two}", *eval_args)
  assert code == 0, err[-3000:]
  alone = json.loads((two / "evaluation.json").read_text())
  for k in ("elbo_L1", "elbo_L2"):
    np.testing.assert_allclose(shared[k]["elbo"], alone[k]["elbo"], rtol=1e-5)
  np.testing.assert_allclose(shared["log_px_k20"]["log_px"], alone["log_px_k20"]["log_px"],
                             rtol=1e-5)


@pytest.mark.slow  # a JAX process
@pytest.mark.system
def test_unreachable_coordinator_fails_with_one_line_in_time(data_root, tmp_path):
  start = time.monotonic()
  out = subprocess.run(
      [sys.executable, "-m", "experiments.mnist", "--distributed",
       f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2", "--process_id=1",
       "--coordinator_timeout=5", f"--workdir={tmp_path}", *ARGS],
      cwd=ROOT, env=_env(1, data_root), capture_output=True, text=True, timeout=TIMEOUT)
  elapsed = time.monotonic() - start
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --distributed: process 1 could not join 2 processes"), last
  assert "--coordinator_timeout=5s" in last
  assert elapsed < 60, elapsed


def test_a_collective_that_failed_with_its_peer_is_named_as_such():
  from experiments import cluster  # pylint: disable=g-import-not-at-top
  xla_error = type("XlaRuntimeError", (RuntimeError,), {})
  reset = xla_error("INTERNAL: Gloo all-reduce failed: [../third_party/gloo/gloo/transport/tcp/"
                    "pair.cc:534] Read error [127.0.0.1]:4242: Connection reset by peer\nmore")
  why = cluster.peer_failure(reset)
  assert why.startswith("a collective with another process failed, which has probably died "
                        "(INTERNAL: Gloo all-reduce failed") and "\n" not in why
  assert cluster.peer_failure(xla_error("RESOURCE_EXHAUSTED: out of memory")) is None
  assert cluster.peer_failure(ValueError("Connection reset by peer")) is None


@pytest.mark.parametrize("method", ["key_value_set", "key_value_try_get"])
def test_the_private_coordination_client_is_where_the_peer_watch_reaches_for_it(method):
  """`multihost.coordination_client` reads `jax._src.distributed`: if JAX moves it, or its
  client loses a method the peer watch calls, this fails here, not in a user's cluster."""
  from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  from vae_jax import multihost  # pylint: disable=g-import-not-at-top
  assert multihost.coordination_client() is None  # no jax.distributed.initialize here
  assert callable(getattr(_jax.DistributedRuntimeClient, method))


def test_joining_turns_off_the_preemption_service_whose_logs_a_killed_coordinator_prints(
    monkeypatch):
  """Nothing here waits on preemption notices; with the service on, a process whose
  coordinator was killed prints its gRPC warnings before JAX's client ends it."""
  from experiments import cluster  # pylint: disable=g-import-not-at-top
  seen = {}
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: seen.update(
      preemption=jax.config.jax_enable_preemption_service))
  names = ("jax_enable_preemption_service", "jax_cpu_collectives_implementation")
  before = {n: getattr(jax.config, n) for n in names}
  try:
    cluster.join(cluster.ClusterOptions(distributed=True, coordinator_address="127.0.0.1:1",
                                        num_processes=1, process_id=0))
  finally:
    for n, v in before.items():
      jax.config.update(n, v)
  assert seen == {"preemption": False}
