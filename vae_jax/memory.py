"""One memory guard for training and evaluation: the memory free for this
process's arrays, and a one-line refusal when a compiled computation needs more."""


def available_bytes() -> int | None:
  """Memory free for this process's arrays: the accelerator's free bytes, else the
  host's MemAvailable (Linux); None when unknown."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
      return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


class TooLarge(ValueError):
  """A computation needs more memory than is free: `what` says how much and why, the
  message adds `fix` (which arguments to lower; a command line names its flags)."""

  def __init__(self, what: str, fix: str):
    super().__init__(f"{what}; {fix}")
    self.what, self.fix = what, fix


def check_fits(need_bytes: float, fraction: float, what: str, fix: str) -> None:
  """Raises `TooLarge` when `need_bytes` exceed `fraction` of the free memory.

  `what` says what needs it, with "{gib}" where the amount goes ("a training step
  needs about {gib} (...)"); `fix` says which settings to lower.
  """
  free = available_bytes()
  if free is not None and need_bytes > fraction * free:
    raise TooLarge(f"{what.format(gib=f'{need_bytes / 2**30:.2f} GiB')}, but "
                   f"{free / 2**30:.2f} GiB are free", fix)
