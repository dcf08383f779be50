"""The command line, derived: every flag comes from a field of a settings dataclass
(`vae_jax.settings.setting`), so a setting's name, type, default, help and check are
written once. An entry point names its settings classes and its body; `main` parses
a fresh set of flags, starts from a preset where the entry takes one (flags given on
the command line win), and runs the body under the error policy (`errors`).

Why dataclasses and not ml_collections' `config_flags`: users type `--L=5`,
`--latent_dims=2,5,10` and `--k=5000`, and `config_flags` would make those
`--config.num_samples=5`; a frozen dataclass keeps every flag's name, gives the
library a typed, hashable value with no flag machinery in it, and checks itself
when built from Python too.
"""

import dataclasses
import sys
import typing
from typing import Any, Callable, NamedTuple

from absl import flags
from absl import logging

from experiments import cluster
from experiments import errors
from vae_jax import settings


class Entry(NamedTuple):
  """An entry point: `body(namespace)` with one attribute per settings class.

  schemas: {attribute: settings class}, e.g. {"run": RunConfig, "data": DataOptions}.
  preset: for the "run" settings, the preset they start from: None (the class's
    defaults), or a function of the parsed flags returning a preset name or None.
  renames: library argument -> flag, where this entry shows an argument under
    another flag (e.g. batch_size -> iwae_batch_size).
  memory_flags: the flags that lower memory, from the parsed settings (e.g. for the
    evaluation method chosen); None: the training flags (`errors.MEMORY_FLAGS`).
  """
  body: Callable[[Any], Any]
  schemas: dict
  preset: Callable[[flags.FlagValues], str | None] | None = None
  renames: dict = {}
  memory_flags: Callable[[Any], str] | None = None


def define(fv: flags.FlagValues, cls) -> None:
  """One flag per setting of `cls`, named, typed and documented by its declaration."""
  for f in settings.fields(cls):
    name, help_text = settings.flag_name(f), f.metadata["help"]
    typ, is_tuple, _ = settings.base_type(cls, f)
    default, choices = f.default, f.metadata["choices"]
    if is_tuple:
      flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=fv)
    elif typ is bool:
      flags.DEFINE_bool(name, default, help_text, flag_values=fv)
    elif typ is int:
      flags.DEFINE_integer(name, default, help_text, flag_values=fv)
    elif typ is float:
      flags.DEFINE_float(name, default, help_text, flag_values=fv)
    elif choices:
      flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=fv)
    else:
      flags.DEFINE_string(name, default, help_text, flag_values=fv)


def build(fv: flags.FlagValues, cls, base=None):
  """An instance of `cls`: `base` (or the class's defaults) with every setting whose
  flag was given on the command line. Raises ValueError naming a bad value."""
  changes = {}
  for f in settings.fields(cls):
    flag = fv[settings.flag_name(f)]
    if flag.present:
      changes[f.name] = _convert(cls, f, flag.value)
  return dataclasses.replace(base if base is not None else cls(), **changes)


def _convert(cls, field: dataclasses.Field, value):
  typ, is_tuple, _ = settings.base_type(cls, field)
  if not is_tuple:
    return value
  try:
    return tuple(typ(v) for v in value)
  except ValueError:
    kind = {int: "integers", float: "numbers"}.get(typ, "values")
    raise ValueError(f"{field.name}={','.join(value)}: must be a comma-separated list of "
                     f"{kind}") from None


def flag_renames(entry: Entry) -> dict:
  """Library argument -> flag for this entry: the settings' own flag names (e.g.
  num_samples -> L) and the entry's renames."""
  out = {}
  for cls in entry.schemas.values():
    out.update({f.name: settings.flag_name(f) for f in settings.fields(cls)
                if settings.flag_name(f) != f.name})
  return {**out, **entry.renames}


def flag_values(entry: Entry, argv: list[str]) -> flags.FlagValues:
  """A fresh set of the entry's flags, parsed from `argv` (raises flags.Error)."""
  fv = flags.FlagValues()
  for cls in entry.schemas.values():
    define(fv, cls)
  fv(["prog", *argv])
  return fv


def parse(entry: Entry, argv: list[str]):
  """The settings `argv` gives `entry`: one attribute per settings class (raises
  flags.Error or ValueError naming the setting)."""
  return _namespace(entry, flag_values(entry, argv))


def main(entry: Entry, argv: list[str] | None = None) -> int:
  """Runs `entry` on `argv` (default: the process's arguments) in this process;
  returns the exit status (0, 1 for the user's errors, 130 for Ctrl-C), having
  written one line for an error."""
  argv = sys.argv[1:] if argv is None else list(argv)
  fv = flags.FlagValues()
  for cls in entry.schemas.values():
    define(fv, cls)
  if any(a in ("--help", "--helpshort", "--helpfull", "-h", "-?") for a in argv):
    print(f"{sys.modules['__main__'].__doc__ or ''}\n{fv.get_help()}")
    return 0
  try:
    rest = fv(["prog", *argv])
  except flags.Error as e:
    return errors.report(str(e))
  if len(rest) > 1:
    return errors.report(f"unexpected arguments: {rest[1:]}; every setting is a --flag")
  _quiet_logging()

  advice = [errors.MEMORY_FLAGS]

  def body():
    ns = _namespace(entry, fv)
    if entry.memory_flags is not None:
      advice[0] = entry.memory_flags(ns)
    if not hasattr(ns, "cluster"):
      return entry.body(ns)
    with cluster.joined(ns.cluster):
      return entry.body(ns)
  return errors.run_under_policy(body, lambda m: errors.as_flags(m, fv, flag_renames(entry)),
                                 lambda: advice[0])


def _namespace(entry: Entry, fv: flags.FlagValues):
  from vae_jax import presets  # pylint: disable=g-import-not-at-top
  values = {}
  for attr, cls in entry.schemas.items():
    base = None
    if attr == "run" and entry.preset is not None:
      name = entry.preset(fv)
      base = presets.get(name) if name else None
    values[attr] = build(fv, cls, base)
  return typing.cast(Any, type("Settings", (), values))


def _quiet_logging() -> None:
  # absl logs INFO lines to stderr as under app.run, which this parser replaces.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["prog"], known_only=True)
  logging.set_verbosity(logging.INFO)
  logging.use_absl_handler()
  handler = logging.get_absl_handler()
  handler.python_handler.stream = sys.stderr  # today's stderr, also when called in-process
  if not any(isinstance(f, errors.QuietLibraries) for f in handler.filters):
    handler.addFilter(errors.QuietLibraries())


def run(main_fn: Callable[[], int]) -> None:
  """`python -m ...`: exits with `main_fn()`'s status. An error exits at once
  (os._exit): whatever failed may have left background threads (orbax, XLA) whose
  teardown would print after the one line; checkpoints are atomic, the lock is
  the kernel's."""
  code = main_fn()
  if code:
    errors.exit_now(code)
  sys.exit(0)
