"""What a run shows on a terminal (messages alone, a bar over the epochs) and the log
file it keeps whatever the console shows."""

import io
import logging as std_logging
import sys

import pytest
from absl import logging

from vae_jax import console


def _record(level, message, pathname="/x/vae_jax/runner.py", exc_info=None):
  return std_logging.LogRecord("absl", level, pathname, 1, message, (), exc_info)


def test_a_terminal_shows_the_message_alone_and_names_warnings():
  fmt = console.TerminalFormatter()
  assert fmt.format(_record(std_logging.INFO, "epoch 1/10  train ELBO -1.00")) == (
      "epoch 1/10  train ELBO -1.00")
  assert fmt.format(_record(std_logging.WARNING, "disk low")) == "warning: disk low"
  try:
    raise ValueError("boom")
  except ValueError:
    text = fmt.format(_record(std_logging.ERROR, "failed", exc_info=sys.exc_info()))
  assert text.startswith("error: failed\nTraceback") and "ValueError: boom" in text


def test_the_log_file_keeps_the_runs_lines_with_their_prefix_and_not_orbaxs_chatter(tmp_path):
  path = tmp_path / console.LOG_FILE
  with console.run_log(path):
    std_logging.getLogger().info("Compiled in 1.0s")  # the library's own lines
    logging.info("from absl: %d", 7)
    std_logging.getLogger().handle(_record(std_logging.INFO, "Closing _NonBlockingMetadataStore",
                                           pathname="/site-packages/orbax/checkpoint/x.py"))
  std_logging.getLogger().info("after the run")
  lines = path.read_text().splitlines()
  assert [l.split("] ", 1)[1] for l in lines] == ["Compiled in 1.0s", "from absl: 7"], lines
  assert all(l.startswith("I") and ".py:" in l for l in lines)  # absl's prefix
  with console.run_log(path):  # a resumed run appends
    std_logging.getLogger().warning("again")
  assert path.read_text().splitlines()[-1].endswith("] again")


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_a_bar_over_the_epochs_only_on_a_terminal_with_the_lines_written_above_it():
  plain = io.StringIO()
  with console.epoch_bar(0, 3, stream=plain) as bar:
    bar.update("train ELBO -1.00")
  assert plain.getvalue() == ""  # a pipe: the epoch lines are the progress
  term = _Terminal()
  handler = logging.get_absl_handler().python_handler
  before = handler.stream
  with console.epoch_bar(2, 5, stream=term) as bar:
    assert handler.stream is not before  # absl's lines go above the bar
    bar.update("train ELBO -1.00")
  assert handler.stream is before
  shown = term.getvalue()
  assert "3/5" in shown and "train ELBO -1.00" in shown and "epoch" in shown


@pytest.mark.parametrize("stream, expected", [(_Terminal(), True), (io.StringIO(), False)])
def test_is_terminal(stream, expected):
  assert console.is_terminal(stream) is expected
  stream.close()
  assert console.is_terminal(stream) is False or expected


def test_where_logging_is_not_set_up_the_runs_lines_also_reach_stderr(tmp_path, capsys,
                                                                      monkeypatch):
  root = std_logging.getLogger()
  monkeypatch.setattr(root, "handlers", [])  # a notebook: nothing configured
  monkeypatch.setattr(root, "level", std_logging.WARNING)
  with console.run_log(tmp_path / "log.txt"):
    root.info("epoch 1/2  train ELBO -1.00")
  root.info("after the run")
  assert capsys.readouterr().err == "epoch 1/2  train ELBO -1.00\n"
  assert root.handlers == [] and root.level == std_logging.WARNING


@pytest.mark.slow  # a process of its own
@pytest.mark.system
def test_the_main_command_on_a_terminal_shows_readmes_lines(data_root, tmp_path):
  """No absl prefix, epoch lines of at most 120 characters, a bar between them; the
  workdir's log.txt has every line with the prefix."""
  import os  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  env = {**os.environ, "VAE_JAX_DATA": str(data_root)}
  code, shown = helpers.on_a_terminal(
      [sys.executable, "-m", "experiments.mnist", "--epochs=3", *helpers.TINY_FLAGS,
       f"--workdir={tmp_path}"], env=env)
  assert code == 0, shown[-3000:]
  lines = [l.rsplit("\r", 1)[-1] for l in shown.split("\r\n") if l.strip()]
  assert lines[0].startswith("Settings (all others at their defaults"), lines
  epochs = [l for l in lines if l.startswith("epoch ")]
  assert epochs[0].startswith("epoch 1/3  train ELBO ") and epochs[-1].endswith("s  done")
  assert all(len(l) <= 120 for l in epochs), epochs
  assert not any(l[:1] in "IWE" and l[1:5].isdigit() for l in lines), lines  # absl's I1207
  assert "epoch:" in shown and "3/3" in shown  # the bar
  logged = (tmp_path / "log.txt").read_text().splitlines()
  assert any(l.startswith("I") and "epoch 3/3" in l for l in logged), logged
