"""The distributed start-up: `--distributed` joins the other processes through
`jax.distributed.initialize` (JAX is the distributed engine; nothing of our own)."""

import contextlib
import dataclasses
import os
import socket
import threading
import time

from absl import logging

from . import errors
from vae_jax import settings
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class ClusterOptions(settings.Settings):
  """How this process joins the others."""
  distributed: bool = setting(
      False, "Join the other processes through jax.distributed.initialize() first: run the "
      "same command on every host. Without the three flags below (or the environment variables "
      "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), JAX detects the cluster "
      "itself (TPU pods, SLURM, Open MPI).")
  coordinator_address: str | None = setting(None, "host:port of process 0's coordinator "
                                            "(--distributed).")
  num_processes: int | None = setting(None, "How many processes in all (--distributed).",
                                      lower=1)
  process_id: int | None = setting(None, "This process's index, 0 for the coordinator "
                                   "(--distributed).", lower=0)
  coordinator_timeout: int = setting(300, "Seconds to wait for every process to join "
                                     "(--distributed).", lower=1)
  peer_timeout: int = setting(20, "Seconds without a heartbeat from another process after "
                              "which this one stops with one line, its checkpoints intact "
                              "(--distributed).", lower=5)



def _env_int(name: str):
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None


def _wait_for_coordinator(address: str, pid: int, num: int, timeout: int, deadline: float):
  """Returns once address accepts a TCP connection; fails with one line at the deadline."""
  host, _, port = address.rpartition(":")
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
        return
    except (OSError, ValueError) as e:
      if time.monotonic() >= deadline:
        raise errors.Failure(
            f"--distributed: process {pid} could not join {num} processes: nothing answered "
            f"at the coordinator address {address} within --coordinator_timeout={timeout}s "
            f"({e}); start process 0 first, check the address and port, or raise "
            f"--coordinator_timeout") from None
      time.sleep(0.5)


def join(options: ClusterOptions) -> None:
  """With `--distributed`: jax.distributed.initialize from the flags, else the JAX_*
  variables, else JAX's own cluster detection; CPU collectives through gloo. Fails
  with one line if the coordinator does not answer in time."""
  if not options.distributed:
    return
  import jax  # pylint: disable=g-import-not-at-top
  address = options.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num = options.num_processes if options.num_processes is not None else _env_int(
      "JAX_NUM_PROCESSES")
  pid = options.process_id if options.process_id is not None else _env_int("JAX_PROCESS_ID")
  if address and (num is None or pid is None):
    raise errors.Failure(f"--coordinator_address={address} needs --num_processes and "
                         f"--process_id (or JAX_NUM_PROCESSES and JAX_PROCESS_ID)")
  if num is not None and pid is not None and not 0 <= pid < num:
    raise errors.Failure(f"--process_id={pid}: must be between 0 and --num_processes - 1 = "
                         f"{num - 1}")
  # CPU processes need a collectives implementation; accelerators ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # No run waits on preemption notices, and the service logs errors when process 0 dies.
  jax.config.update("jax_enable_preemption_service", False)
  timeout = options.coordinator_timeout
  deadline = time.monotonic() + timeout
  if address and pid:
    # JAX's client aborts the process when the coordinator never answers: check first.
    _wait_for_coordinator(address, pid, num, timeout, deadline)
  logging.info("Joining %s processes through %s (up to %ds)", num or "the detected",
               address or "the detected coordinator", timeout)
  try:
    jax.distributed.initialize(address, num, pid,
                               initialization_timeout=max(1, int(deadline - time.monotonic())))
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.Failure(
        f"--distributed: process {pid} could not join {num} processes through the "
        f"coordinator at {address or '(detected)'} within --coordinator_timeout={timeout}s "
        f"({first[:200]}); start process 0 first, check the address and port, or raise "
        f"--coordinator_timeout") from None
  logging.info("Process %d of %d: %d local devices of %d (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


@contextlib.contextmanager
def joined(options: ClusterOptions):
  """`join`, then, with several processes, a `PeerWatch` for the duration of the body."""
  join(options)
  import jax  # pylint: disable=g-import-not-at-top
  if not options.distributed or jax.process_count() == 1:
    yield
    return
  from vae_jax import multihost  # pylint: disable=g-import-not-at-top
  watch = PeerWatch(multihost.coordination_client(), jax.process_index(), jax.process_count(),
                    options.peer_timeout)
  try:
    yield
  except BaseException as e:
    watch.stop(finished=False)  # the others will see this process stop answering
    why = peer_failure(e)
    if why:
      raise errors.Failure(
          f"--distributed: {why}; process {jax.process_index()} stops too. Every checkpoint "
          f"saved is intact: start all the processes again with the same command to "
          f"resume") from None
    raise
  watch.stop(finished=True)


# What XLA's collectives say when the process at the other end is gone.
_PEER_GONE = ("connection reset", "connection closed", "broken pipe", "connection refused",
              "socket closed", "end of file", "peer")


def peer_failure(e: BaseException) -> str | None:
  """The one-line reason when `e` is a collective that failed because another process
  died (a reset connection, a closed socket), else None."""
  if type(e).__name__ not in ("XlaRuntimeError", "JaxRuntimeError"):
    return None
  text = str(e).lower()
  if not any(s in text for s in _PEER_GONE):
    return None
  first = next((l.strip() for l in str(e).splitlines() if l.strip()), "")
  return f"a collective with another process failed, which has probably died ({first[:160]})"


class PeerWatch:
  """Ends this process with one line when another stops answering.

  A process killed mid-run leaves the others blocked in a collective until XLA's
  own heartbeat check aborts them, minutes later and with a page of C++ traces.
  Here each process increments its own counter in the coordinator's key-value
  store every `HEARTBEAT_SECONDS` and reads the others'; a counter unchanged for
  `timeout` seconds, or a store that stops answering (process 0, which holds it,
  is gone), ends this process at once (exit 1). Checkpoints are written atomically,
  so the same command on every process resumes from the last one. A process that
  finished its work says so, and is not waited for.
  """

  HEARTBEAT_SECONDS = 2.0

  def __init__(self, client, pid: int, num: int, timeout: float):
    self._client, self._pid, self._timeout = client, pid, timeout
    self._others = [p for p in range(num) if p != pid]
    self._stopped = threading.Event()
    self._thread = threading.Thread(target=self._run, name="PeerWatch", daemon=True)
    self._thread.start()

  def stop(self, finished: bool) -> None:
    """Stops watching; `finished`: this process's work is done, so the others stop
    watching it (a process that failed stops beating, and the others follow it)."""
    self._stopped.set()
    self._thread.join()
    if finished:
      with contextlib.suppress(Exception):  # the store may be gone already
        self._client.key_value_set(f"vae_jax/done/{self._pid}", "1", allow_overwrite=True)

  def _get(self, key: str):
    try:
      return self._client.key_value_try_get(key)
    except Exception as e:  # pylint: disable=broad-except
      if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
        return None
      raise

  def _run(self) -> None:
    seen = {p: (None, time.monotonic()) for p in self._others}
    beat = 0
    while not self._stopped.wait(self.HEARTBEAT_SECONDS):
      beat += 1
      try:
        self._client.key_value_set(f"vae_jax/heartbeat/{self._pid}", str(beat),
                                   allow_overwrite=True)
        for p in list(seen):
          if self._get(f"vae_jax/done/{p}") is not None:
            del seen[p]
            continue
          value, since = seen[p]
          now, current = time.monotonic(), self._get(f"vae_jax/heartbeat/{p}")
          if current != value:
            seen[p] = (current, now)
          elif now - since > self._timeout:
            self._fail(f"process {p} stopped answering (no heartbeat for {now - since:.0f}s)")
      except Exception as e:  # pylint: disable=broad-except  (the store is unreachable)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        self._fail(f"the coordinator (process 0) stopped answering ({first})")

  def _fail(self, why: str) -> None:
    if self._stopped.is_set():
      return
    errors.report(f"--distributed: {why}; process {self._pid} stops too. Every checkpoint "
                  f"saved is intact: start all the processes again with the same command to "
                  f"resume (--peer_timeout sets how long to wait)")
    errors.exit_now(1)
