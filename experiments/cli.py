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
import os
import pathlib
import re
import sys
import textwrap
import typing
from typing import Any, Callable, NamedTuple

from absl import flags
from absl import logging

from . import cluster
from . import errors
from vae_jax import console
from vae_jax import settings
from vae_jax import workdir
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class RuntimeOptions(settings.Settings):
  """The process."""
  compilation_cache: str = setting(
      "", "Where XLA keeps compiled programs between runs, so that a second run of the same "
      "settings starts sooner (default: $JAX_COMPILATION_CACHE_DIR if set, else "
      "$XDG_CACHE_HOME/vae_jax/xla, else ~/.cache/vae_jax/xla); none: keep nothing.")


  def cache_dir(self) -> str | None:
    if self.compilation_cache == "none":
      return None
    if self.compilation_cache:
      return os.path.expanduser(self.compilation_cache)
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # JAX's own setting
      return os.environ["JAX_COMPILATION_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "vae_jax", "xla")


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
    if is_tuple and f.metadata.get("repeat"):
      flags.DEFINE_multi_string(name, list(default), help_text, flag_values=fv)
    elif is_tuple:
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


def schemas(entry: Entry) -> dict:
  """The entry's settings classes and the process's (`RuntimeOptions`)."""
  return {**entry.schemas, "runtime": RuntimeOptions}


def flag_values(entry: Entry, argv: list[str]) -> flags.FlagValues:
  """A fresh set of the entry's flags, parsed from `argv` (raises flags.Error)."""
  fv = flags.FlagValues()
  for cls in schemas(entry).values():
    define(fv, cls)
  fv(["prog", *config_spellings(argv, _fields(entry))])
  return fv


def _fields(entry: Entry) -> dict:
  """Each setting's field name -> its flag name, over the entry's settings classes."""
  return {f.name: settings.flag_name(f) for cls in schemas(entry).values()
          for f in settings.fields(cls)}


def parse(entry: Entry, argv: list[str]):
  """The settings `argv` gives `entry`: one attribute per settings class (raises
  flags.Error or ValueError naming the setting)."""
  return _namespace(entry, flag_values(entry, argv))


# What an entry's `preset` returns for an experiment file (`--config=PATH.py[:ARG]`).
CONFIG_SOURCE = "config "


def config_spellings(argv: list[str], fields: dict) -> list[str]:
  """`--config.FIELD=VALUE` (the Flax examples' spelling) as `--FLAG=VALUE`, FLAG the
  setting's own flag (`fields`: field name -> flag name); an unknown FIELD: ValueError."""
  out = []
  for a in argv:
    m = re.fullmatch(r"--config\.(\w+)(=.*)?", a, re.S)
    if m:
      if m.group(1) not in fields:
        raise ValueError(f"--config.{m.group(1)}: no such setting (--config.FIELD takes a "
                         f"field of RunConfig; --help lists their flags)")
      a = f"--{fields[m.group(1)]}{m.group(2) or ''}"
    out.append(a)
  return out


# The names other codebases give our settings (the PyTorch example, pythae, papers' code).
ALIASES = {"lr": "learning_rate", "bs": "batch_size", "batch": "batch_size",
           "z_dim": "latent_dim", "zdim": "latent_dim", "latent_size": "latent_dim",
           "n_latent": "latent_dim", "num_epochs": "epochs", "n_epochs": "epochs",
           "n_samples": "L", "num_samples": "L"}

# Data sets TFDS holds that users ask --dataset for by name.
TFDS_NAMES = ("cifar10", "cifar100", "fashion_mnist", "svhn_cropped", "celeb_a", "omniglot",
              "binarized_mnist", "emnist", "kmnist")


def flag_error(e: Exception, fv: flags.FlagValues) -> str:
  """The one line of a parse error, with the nearest flag or value where one is near."""
  if isinstance(e, flags.UnrecognizedFlagError):
    name = e.flagname
    return (f"--{name}: no such flag{settings.nearest(name, fv, ALIASES, prefix='--')} "
            f"(--help lists every flag)")
  m = re.fullmatch(r"flag --(\w+)=(.*?): value should be one of <(.*)>", str(e), re.S)
  if m:
    name, value, choices = m.group(1), m.group(2), m.group(3).split("|")
    if name == "dataset" and value.lower() in TFDS_NAMES:
      return (f"--dataset={value}: not built in; TensorFlow Datasets has it: --dataset=tfds "
              f"--tfds_name={value.lower()} (pip install -e \".[tfds]\"), or --dataset=folder "
              f"--data_path=DIR for your own images")
    if len(choices) > 8:  # the presets: the nearest, and where the list is
      where = "--list_presets lists them" if name == "preset" else "--help lists them"
      return (f"--{name}={value}: not one of the {len(choices)} choices"
              f"{settings.nearest(value, choices)} ({where})")
    return f"--{name}={value}: expected one of {choices}{settings.nearest(value, choices)}"
  return str(e)


def main(entry: Entry, argv: list[str] | None = None) -> int:
  """Runs `entry` on `argv` (default: the process's arguments) in this process;
  returns the exit status (0, 1 for the user's errors, 130 for Ctrl-C), having
  written one line for an error."""
  argv = sys.argv[1:] if argv is None else list(argv)
  fv = flags.FlagValues()
  for cls in schemas(entry).values():
    define(fv, cls)
  if any(a in ("--help", "--helpshort", "--helpfull", "-h", "-?") for a in argv):
    print(f"{sys.modules['__main__'].__doc__ or ''}\n{help_text(entry)}")
    return 0
  try:
    rest = fv(["prog", *config_spellings(argv, _fields(entry))])
  except (flags.Error, ValueError) as e:
    return errors.report(flag_error(e, fv))
  if len(rest) > 1:
    return errors.report(f"unexpected arguments: {rest[1:]}; every setting is a --flag")
  _quiet_logging()

  advice = [errors.MEMORY_FLAGS]

  def body():
    ns = _namespace(entry, fv)
    _compilation_cache(ns.runtime)
    _log_settings(entry, fv, ns)
    if entry.memory_flags is not None:
      advice[0] = entry.memory_flags(ns)
    if not hasattr(ns, "cluster"):
      _log_devices()
      return entry.body(ns)
    with cluster.joined(ns.cluster):  # devices are known once the processes have joined
      _log_devices()
      return entry.body(ns)
  return errors.run_under_policy(body, lambda m: errors.as_flags(m, fv, flag_renames(entry)),
                                 lambda: advice[0])


def _log_devices() -> None:
  """The run's backend and devices, among its first lines (docs/guide.md: on a GPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  kinds = ", ".join(sorted({d.device_kind for d in devices}))
  logging.info("JAX %s on %s: %d device%s (%s)", jax.__version__, jax.default_backend(),
               len(devices), "s" if len(devices) > 1 else "", kinds)


def _namespace(entry: Entry, fv: flags.FlagValues):
  from vae_jax import presets  # pylint: disable=g-import-not-at-top
  values = {"preset_name": None}
  for attr, cls in schemas(entry).items():
    base = None
    if attr == "run" and entry.preset is not None:
      name = entry.preset(fv)  # a preset's name, or "config PATH.py[:ARG]"
      if name and name.startswith(CONFIG_SOURCE):
        base = presets.from_file(name[len(CONFIG_SOURCE):])
      else:
        base = presets.get(name) if name else None
      values["preset_name"] = name
    values[attr] = build(fv, cls, base)
  return typing.cast(Any, type("Settings", (), values))


def _shown(value) -> str:
  return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def effective_settings(entry: Entry, fv: flags.FlagValues, ns) -> list[str]:
  """The settings of `ns` that differ from their declared defaults, each as
  "--flag=value (from a flag | preset NAME)"."""
  out = []
  for attr, cls in schemas(entry).items():
    value, default = getattr(ns, attr), cls()
    for f in settings.fields(cls):
      v = getattr(value, f.name)
      if v != getattr(default, f.name):
        name = settings.flag_name(f)
        source = ("flag" if fv[name].present else ns.preset_name
                  if ns.preset_name.startswith(CONFIG_SOURCE) else f"preset {ns.preset_name}")
        out.append(f"--{name}={_shown(v)} ({source})")
  return out


def _log_settings(entry: Entry, fv: flags.FlagValues, ns) -> None:
  changed = effective_settings(entry, fv, ns)
  logging.info("Settings (all others at their defaults; --help lists them): %s",
               ", ".join(changed) if changed else "the defaults")


def _compilation_cache(options: RuntimeOptions) -> None:
  """JAX's persistent compilation cache in `options`' folder (or none)."""
  import jax  # pylint: disable=g-import-not-at-top
  path = options.cache_dir()
  if path is not None:
    try:  # JAX warns at every write into an unusable folder: say it once, go without
      os.makedirs(path, exist_ok=True)
      workdir.check_writable(pathlib.Path(path))
    except OSError as e:
      why = ("a file, not a folder" if os.path.isfile(path) else
             e.strerror or str(e).split(": cannot write there (")[-1].rstrip(")"))
      logging.warning("--compilation_cache=%s: cannot keep programs there (%s); compiling "
                      "without a cache this run (pass a writable folder, or "
                      "--compilation_cache=none)", path, why)
      path = None
  jax.config.update("jax_compilation_cache_dir", path)
  if path is not None and "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    # Keep every program that took a moment: the epoch, the evaluations, the pictures.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def help_text(entry: Entry) -> str:
  """Every flag of `entry`, grouped by what it sets, with its default and bounds."""
  groups: dict[str, list[str]] = {}
  for cls in schemas(entry).values():
    for f in settings.fields(cls):
      group = f.metadata.get("group") or _title(cls)
      default = f.default
      shown = "" if default in (None, "", ()) else f"={_shown(default)}"
      head = f"  --{settings.flag_name(f)}{shown}"
      bounds = settings.describe_bounds(f)
      if bounds:
        head += f"  [{bounds}]"
      body = textwrap.fill(f.metadata["help"], 88, initial_indent=" " * 6,
                           subsequent_indent=" " * 6)
      groups.setdefault(group.rstrip(".").capitalize(), []).append(f"{head}\n{body}")
  parts = [f"{name}:\n" + "\n".join(lines) for name, lines in groups.items()]
  parts.append("Flags from a file:\n  --flagfile=FILE\n      One --flag=value a line; "
               "flags after it on the command line win.")
  return "\n\n".join(parts)


def _title(cls) -> str:
  """A settings class's `--help` title: its docstring's first clause, whole lines joined."""
  first = " ".join((cls.__doc__ or cls.__name__).split("\n\n")[0].split())
  return re.split(r"(?<=\w)[:.;] ", first + " ")[0].rstrip(".")


def _quiet_logging() -> None:
  # absl logs INFO lines to stderr as under app.run, which this parser replaces.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["prog"], known_only=True)
  logging.set_verbosity(logging.INFO)
  logging.use_absl_handler()
  handler = logging.get_absl_handler()
  handler.python_handler.stream = sys.stderr  # today's stderr, also when called in-process
  # On a terminal the messages alone (README's lines); elsewhere absl's prefix of time
  # and place. The workdir's log.txt keeps the prefix either way.
  handler.setFormatter(console.TerminalFormatter() if console.is_terminal(sys.stderr)
                       else logging.PythonFormatter())
  if not any(isinstance(f, console.QuietLibraries) for f in handler.filters):
    handler.addFilter(console.QuietLibraries())
  errors.quiet_writer_threads()


def run(main_fn: Callable[[], int]) -> None:
  """`python -m ...`: exits with `main_fn()`'s status. An error exits at once
  (os._exit): whatever failed may have left background threads (orbax, XLA) whose
  teardown would print after the one line; checkpoints are atomic, the lock is
  the kernel's."""
  main = sys.modules["__main__"]
  if main.__doc__ is None:  # an installed command's script: --help shows the entry's page
    main.__doc__ = sys.modules[main_fn.__module__].__doc__
  code = main_fn()
  if code:
    errors.exit_now(code)
  sys.exit(0)
