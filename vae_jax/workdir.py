"""A run's working directory: one run at a time (an OS file lock), atomic writes,
a write check before long work, and SIGINT/SIGTERM as a request to stop."""

import fcntl
import os
import pathlib
import signal
import socket
import tempfile
import time


def write_atomic(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename: never half a file."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def check_writable(directory: pathlib.Path) -> None:
  """Raises OSError naming `directory` when a file cannot be created in it."""
  try:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_check"):
      pass
  except OSError as e:
    raise OSError(f"{directory}: cannot write there ({e.strerror or e}); fix its permissions "
                  f"or copy the run to a writable directory") from None


class StopRequest:
  """Turns SIGINT/SIGTERM into a request to stop at the next safe point (`signal` set)."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock."""


class Lock:
  """An exclusive `fcntl` lock on WORKDIR/.lock, held while the run lives.

  The kernel drops the lock when its process dies, however it dies, so a lock
  left by a killed run never blocks the next one. The file names the holder
  (PID, host, start time) for the error the second run gets.
  """

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / ".lock"
    self._fd = None

  def __enter__(self):
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
      os.close(fd)
      raise WorkdirBusy(f"{self.path.parent} is in use by {holder}; wait for that run to end "
                        f"or stop it, or pass another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} on {socket.gethostname()} (since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
