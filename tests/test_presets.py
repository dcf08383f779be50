"""Every preset is a whole, valid configuration whose docstring says what it is, what it
gave, and commands that parse as written (nothing trained or compiled)."""

import dataclasses
import re
import shlex

import pytest

from experiments import cli
from tests import helpers
from vae_jax import config
from vae_jax import presets


def _commands(doc: str) -> list[list[str]]:
  """The `python -m MODULE ARGS` lines of a docstring, continuation lines joined."""
  text = re.sub(r"\\\n\s*", " ", doc)
  return [shlex.split(line.split("python -m ", 1)[1].split("#")[0])
          for line in text.splitlines() if "python -m " in line]


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_builds_and_its_commands_parse(name):
  run = presets.get(name)
  assert isinstance(run, config.RunConfig) and run == config.RunConfig(
      **dataclasses.asdict(run))
  what, _ = presets.describe(name)
  assert what, name
  commands = _commands(presets.PRESETS[name].__doc__)
  assert commands, f"{name}: its docstring gives no command"
  for module, *argv in commands:
    ns = cli.parse(helpers.command_entry(module), argv)
    if f"--preset={name}" in argv:  # the preset, but for what the other flags set
      flagged = {a[2:].split("=")[0] for a in argv}
      assert ns.preset_name == name and all(
          getattr(ns.run, f.name) == getattr(run, f.name)
          for f in dataclasses.fields(run) if f.name not in flagged), (name, argv)


def test_table1_rows_are_presets_in_their_time_budget():
  for row in presets.TABLE1_ROWS:
    assert isinstance(presets.table1_row(row, epochs=7), config.RunConfig)
    assert presets.table1_row(row, epochs=7).epochs == 7


def test_an_unknown_preset_is_one_line_naming_the_choices():
  with pytest.raises(ValueError, match=r"preset=nope: expected one of \["):
    presets.get("nope")
  with pytest.raises(ValueError, match=r"rows: unknown 'vae_3layer'"):
    presets.table1_row("vae_3layer", epochs=7)
