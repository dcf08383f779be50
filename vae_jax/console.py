"""What a run shows on a terminal, and the full log it keeps in its workdir.

On a terminal the lines are the messages alone (a warning says so), with a bar over
the epochs below them; elsewhere (a pipe, a cluster's log) the lines keep absl's
prefix of level, time and place. Either way the workdir's `log.txt` gets every line
of the run with that prefix.
"""

import contextlib
import logging as std_logging
import sys

from absl import logging

LOG_FILE = "log.txt"


class TerminalFormatter(std_logging.Formatter):
  """A record as its message alone; warnings and errors say their level first."""

  def format(self, record: std_logging.LogRecord) -> str:
    text = record.getMessage()
    if record.levelno >= std_logging.WARNING:
      text = f"{std_logging.getLevelName(record.levelno).lower()}: {text}"
    if record.exc_info:
      text += "\n" + self.formatException(record.exc_info)
    return text


class QuietLibraries:
  """Drops orbax's INFO chatter (a dozen lines per checkpoint), its ERROR tracebacks (a
  failed save is `checkpoint.CheckpointError`'s one line; a full disk gave 300-500
  lines before it) and JAX's "Unable to initialize backend" lines from the absl log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if "/orbax/" in record.pathname:
      return record.levelno == std_logging.WARNING
    if record.levelno > std_logging.INFO:
      return True
    # JAX says at every start that it found no TPU: on a machine without one, not news.
    return not (record.name.startswith("jax._src.xla_bridge")
                and "Unable to initialize backend" in record.getMessage())


def is_terminal(stream) -> bool:
  isatty = getattr(stream, "isatty", None)
  try:
    return bool(isatty and isatty())
  except ValueError:  # a closed stream
    return False


@contextlib.contextmanager
def run_log(path):
  """The body's log lines (this library's and the entry points', not other libraries'
  chatter) appended to `path` in absl's full format, whatever the console shows.
  Where nothing shows them (Python's logging not set up, as in a notebook), they also
  go to stderr as messages alone; INFO lines pass for the body's duration."""
  root = std_logging.getLogger()
  handlers = [_handler(std_logging.FileHandler(path, encoding="utf-8"),
                       logging.PythonFormatter())]
  if not root.handlers:
    handlers.append(_handler(std_logging.StreamHandler(sys.stderr), TerminalFormatter()))
  level = root.level
  if level > std_logging.INFO:
    root.setLevel(std_logging.INFO)
  for h in handlers:
    root.addHandler(h)
  try:
    yield
  finally:
    for h in handlers:
      root.removeHandler(h)
      h.close()
    root.setLevel(level)


def _handler(handler: std_logging.Handler, formatter) -> std_logging.Handler:
  handler.setFormatter(formatter)
  handler.setLevel(std_logging.INFO)
  handler.addFilter(QuietLibraries())
  return handler


class _AboveBar:
  """A stream whose writes clear the bars, write and draw them again (tqdm's
  `external_write_mode`): log lines go above a bar instead of through it."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text: str) -> int:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    with tqdm.external_write_mode(file=self._stream):
      return self._stream.write(text)

  def flush(self) -> None:
    self._stream.flush()

  def __getattr__(self, name):
    return getattr(self._stream, name)


class _NoBar:
  def update(self, summary: str) -> None:
    del summary


class _Bar:
  def __init__(self, bar):
    self._bar = bar

  def update(self, summary: str) -> None:
    self._bar.set_postfix_str(summary, refresh=False)
    self._bar.update(1)
    self._bar.refresh()  # once an epoch: never too often


@contextlib.contextmanager
def epoch_bar(start: int, epochs: int, stream=None, show: bool | None = None):
  """A tqdm bar over epochs `start`..`epochs` on `stream` (stderr) when it is a
  terminal (`show` overrides), with absl's lines written above it; `update(summary)`
  after each epoch. Elsewhere nothing: the epoch lines are the progress."""
  stream = sys.stderr if stream is None else stream
  if not (is_terminal(stream) if show is None else show):
    yield _NoBar()
    return
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  handler = logging.get_absl_handler().python_handler
  previous = handler.stream
  handler.stream = _AboveBar(previous)
  bar = tqdm(total=epochs, initial=start, desc="epoch", file=stream, leave=False,
             dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
             "[{elapsed}<{remaining}{postfix}]")
  try:
    yield _Bar(bar)
  finally:
    bar.close()
    handler.stream = previous
