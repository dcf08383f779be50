"""The distributed start-up: `--distributed` joins the other processes through
`jax.distributed.initialize` (JAX is the distributed engine; nothing of our own)."""

import dataclasses
import os
import socket
import time

from absl import logging

from experiments import errors
from vae_jax import settings
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
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

  def __post_init__(self):
    settings.check(self)


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
