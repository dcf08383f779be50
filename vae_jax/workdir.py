"""A run's working directory: one run at a time (an OS file lock)."""

import fcntl
import os
import pathlib
import socket
import time


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
