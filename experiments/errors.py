"""The error policy of every entry point: the user's errors, running out of memory
and Ctrl-C each end with one line naming the flag to change and a non-zero exit;
anything else is a bug and keeps its traceback."""

import os
import re
import signal
import sys
import threading
import traceback

from absl import logging


class Failure(Exception):
  """An entry point's own one-line error (e.g. a coordinator that never answered)."""


def _user_errors() -> tuple:
  from vae_jax import checkpoint, data, objectives, runner, workdir  # pylint: disable=g-import-not-at-top
  # NotImplementedError: a closed form or an inverse the chosen objects lack, said in one line.
  return (ValueError, NotImplementedError, OSError, Failure, data.DataError, runner.NonFiniteError,
          checkpoint.CheckpointError, workdir.WorkdirBusy, objectives.NotADistribution)


def _evaluation_stopped() -> type:
  from vae_jax import engine  # pylint: disable=g-import-not-at-top
  return engine.EvaluationStopped


def report(message: str, code: int = 1) -> int:
  """Writes `error: message` as one line on stderr; returns `code`."""
  sys.stdout.flush()
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  return code


class Interrupts:
  """SIGINT handler: raises KeyboardInterrupt and counts, so that an interruption
  Python swallowed (one raised inside a garbage-collector callback) is still seen."""

  def __init__(self):
    self.count = 0

  def __call__(self, signum, frame):  # pylint: disable=unused-argument
    self.count += 1
    raise KeyboardInterrupt


def _quiet_interrupts(hook):
  """`sys.unraisablehook` less the KeyboardInterrupts Python could not raise (one inside
  XLA's garbage-collector callback printed "Exception ignored" and a traceback): those
  are counted by `Interrupts` and raised at the next safe point."""
  def quiet(unraisable):
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
      hook(unraisable)
  return quiet


def check_interrupted() -> None:
  """Raises KeyboardInterrupt if a Ctrl-C arrived and was swallowed so far."""
  if getattr(signal.getsignal(signal.SIGINT), "count", 0):
    raise KeyboardInterrupt


def _out_of_memory(e: Exception) -> bool:
  return type(e).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and any(
      s in str(e) for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                            "Unable to allocate", "Failed to allocate"))


MEMORY_FLAGS = "--batch_size, --L, --k, --chunk_size or --eval_batch_size"


def run_under_policy(body, shown, memory_flags=lambda: MEMORY_FLAGS) -> int:
  """Runs `body()`; returns 0, or the exit status after one line (`shown` turns a
  library message into the command line's words; `memory_flags()` names the flags
  that lower memory, for what `body` was doing)."""
  # Ctrl-C raises KeyboardInterrupt even where the parent started us with SIGINT
  # ignored (a background job, a test runner's worker), and is remembered.
  interrupts = Interrupts()
  previous = signal.signal(signal.SIGINT, interrupts)
  previous_hook = sys.unraisablehook
  sys.unraisablehook = _quiet_interrupts(previous_hook)
  try:
    body()
    if interrupts.count:
      raise KeyboardInterrupt
    return 0
  except _evaluation_stopped() as e:  # as training's stop: what is kept, never "error:"
    logging.warning("%s", shown(str(e)))
    return 130
  except _user_errors() as e:
    return report(shown(str(e)))
  except MemoryError:
    return report("out of host memory; lower --batch_size, --L, --k or --eval_batch_size (or "
                  "use fewer --train_examples)")
  except KeyboardInterrupt:
    return report("interrupted (Ctrl-C); a run resumes from its last checkpoint with the same "
                  "command", 130)
  except Exception as e:  # pylint: disable=broad-except
    if not _out_of_memory(e):
      raise
    first = str(e).strip().splitlines()[0][:200]
    return report(f"out of memory ({first}); lower {memory_flags()}")
  finally:
    signal.signal(signal.SIGINT, previous)
    sys.unraisablehook = previous_hook


_ARGUMENT = re.compile(r"(?<![\w\-/.$=])([A-Za-z_]\w*)(=True\b|=)?")


def as_flags(message: str, fv, renames: dict) -> str:
  """A library message in the command line's words: the library names its
  arguments (`batch_size=4096`, `fresh=True`, `lower num_samples`), the user
  typed flags (`--batch_size=4096`, `--fresh`, `lower --L`). Bare words are taken
  for arguments only when they hold an underscore, are renamed, or read "another
  workdir"; a field named after "FILE.json: " stays the file's. `fv`: the entry's flags; `renames`: argument -> flag."""
  def one(m: re.Match) -> str:
    name, value = m.group(1), m.group(2)
    if message[max(0, m.start() - 7):m.start()] == ".json: ":
      return m.group(0)  # a field of a file (config.json), not a flag
    flag = renames.get(name, name)
    bare_ok = "_" in name or name in renames or message[max(0, m.start() - 8):m.start()] == "another "
    if flag not in fv or (value is None and not bare_ok):
      return m.group(0)
    return f"--{flag}" if value == "=True" else f"--{flag}{value or ''}"
  return _ARGUMENT.sub(one, message)


# The libraries whose background threads write files: a write they fail surfaces in the
# main thread as one line (`checkpoint.CheckpointError`, the run's own error).
_WRITERS = ("/orbax/", "/tensorboardX/", "/asyncio/")


def _writer_failure(exc: BaseException | None, tb) -> bool:
  """Whether `exc` is a failed write in a writer's thread."""
  files = [f.filename for f in traceback.extract_tb(tb)]
  return (isinstance(exc, (OSError, ValueError, RuntimeError))
          and any(w in f for f in files for w in _WRITERS))


def quiet_writer_threads() -> None:
  """A failed write in orbax's or tensorboardX's threads (a full disk) no longer prints
  its thread's traceback, nor the closed event loops its callbacks then find (raised
  where nothing can catch them: `sys.unraisablehook`): the main thread reports the
  failure in one line. Other exceptions print as before."""
  if getattr(threading.excepthook, "quiet_writers", False):
    return
  thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

  def in_thread(args):
    if not _writer_failure(args.exc_value, args.exc_traceback):
      thread_hook(args)

  def unraisable(args):
    if not _writer_failure(args.exc_value, args.exc_traceback):
      unraisable_hook(args)
  in_thread.quiet_writers = True
  threading.excepthook, sys.unraisablehook = in_thread, unraisable


def exit_now(code: int) -> None:
  """Leaves the process at once with `code` (see `cli.run`)."""
  logging.flush()
  sys.stderr.flush()
  os._exit(code)
