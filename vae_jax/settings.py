"""Declaring settings once: a dataclass field that carries its help, its
command-line name, its bounds or choices, and the check that enforces them.

A settings class (`config.RunConfig`, `datasets.DataOptions`, an entry point's
own options) declares each setting as `setting(default, help, ...)` and calls
`check(self)` in `__post_init__`; the command line (`experiments/cli.py`) is
derived from the same fields, so a setting is written in one place. No flags here.
"""

import dataclasses
import difflib
import json
import math
import typing
from typing import Any, ClassVar, Sequence


@dataclasses.dataclass(frozen=True)
class Settings:
  """A settings class's base: an instance checks every field against its declaration
  when it is made (a subclass with checks of its own calls `super().__post_init__()`)."""

  # The flags that lower the memory of what these settings drive ("" where none).
  memory_flags: ClassVar[str] = ""

  def __post_init__(self):
    check(self)


def setting(default: Any, help: str, *, flag: str | None = None,  # pylint: disable=redefined-builtin
            choices: Sequence[str] | None = None, lower: float | None = None,
            upper: float | None = None, above: float | None = None,
            unique: bool = False, nonempty: bool = False, group: str | None = None,
            resumable: bool = False, repeat: bool = False) -> Any:
  """A dataclass field declaring one setting.

  Args:
    default: its value when nothing else sets it (tuples for lists).
    help: one or two sentences for `--help`.
    flag: its command-line name when that differs from the field's (e.g. "L").
    choices: the values a string setting may take.
    lower, upper: inclusive bounds of a number (of each item of a tuple).
    above: an exclusive lower bound (e.g. a step size > 0).
    unique: a tuple's items must differ.
    nonempty: a tuple must hold at least one item.
    group: its heading in `--help` (default: its class's).
    resumable: it may change when a run resumes (train longer, lower the step size);
      every other setting of a run must match its checkpoints'.
    repeat: a tuple of strings given by repeating its flag (--sweep=a --sweep=b), not
      by a comma-separated list.
  """
  meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
          "lower": lower, "upper": upper, "above": above, "unique": unique,
          "nonempty": nonempty, "group": group, "resumable": resumable,
          "repeat": repeat}
  return dataclasses.field(default=default, metadata=meta)


def describe_bounds(field: dataclasses.Field) -> str:
  """A setting's choices or bounds for `--help`, e.g. "one of: a, b" or ">= 1, <= 256"."""
  meta = field.metadata
  if meta.get("choices"):
    return "one of: " + ", ".join(meta["choices"])
  shown = lambda v: str(v) if isinstance(v, int) else f"{v:g}"  # 2**63 - 1 in full
  parts = [f">= {shown(meta['lower'])}" if meta.get("lower") is not None else "",
           f"> {shown(meta['above'])}" if meta.get("above") is not None else "",
           f"<= {shown(meta['upper'])}" if meta.get("upper") is not None else ""]
  return ", ".join(p for p in parts if p)


def flag_name(field: dataclasses.Field) -> str:
  return field.metadata.get("flag") or field.name


def nearest(value: str, names, aliases: dict | None = None, prefix: str = "") -> str:
  """"; did you mean PREFIX+X?" for the name among `names` nearest to `value` (or the
  one `aliases` maps it to: the spellings other codebases use), else ""."""
  hit = (aliases or {}).get(str(value).lower())
  close = [hit] if hit else difflib.get_close_matches(str(value), list(map(str, names)), n=1,
                                                      cutoff=0.6)
  return f"; did you mean {prefix}{close[0]}?" if close else ""


def fields(cls_or_instance) -> list[dataclasses.Field]:
  """The declared settings of a settings class (fields made with `setting`)."""
  return [f for f in dataclasses.fields(cls_or_instance) if "help" in f.metadata]


def base_type(cls, field: dataclasses.Field):
  """(the type of a setting's values, whether it is a tuple of them, whether it may be None)."""
  hint = typing.get_type_hints(cls)[field.name]
  optional = type(None) in typing.get_args(hint)
  if optional:
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  if typing.get_origin(hint) is tuple:
    return typing.get_args(hint)[0], True, optional
  return hint, False, optional


def check(instance) -> None:
  """Raises ValueError naming the first setting of `instance` outside its declaration:
  `name=value: must be ...`."""
  for f in fields(instance):
    value = getattr(instance, f.name)
    _, is_tuple, _ = base_type(type(instance), f)
    items = value if is_tuple else (value,)
    problem = _problem(f.metadata, items, is_tuple)
    if problem:
      shown = ",".join(str(v) for v in value) if is_tuple else value
      raise ValueError(f"{f.name}={shown}: {problem}")


def _problem(meta: dict, items: Sequence, is_tuple: bool) -> str | None:
  if is_tuple and not items and meta["nonempty"]:
    return "must list at least one value"
  if is_tuple and meta["unique"] and len(set(items)) != len(items):
    return "lists a value twice; give each once"
  for v in items:
    if v is None:
      continue
    if meta["choices"] and v not in meta["choices"]:
      return f"expected one of {list(meta['choices'])}{nearest(v, meta['choices'])}"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      continue
    if isinstance(v, float) and not math.isfinite(v):
      return "must be a finite number"
    if meta["lower"] is not None and v < meta["lower"]:
      return f"must be >= {meta['lower']}"
    if meta["upper"] is not None and v > meta["upper"]:
      return f"must be <= {meta['upper']}"
    if meta["above"] is not None and not v > meta["above"]:
      return f"must be > {meta['above']}"
  return None


def from_dict(cls, values: dict, source: str):
  """An instance of `cls` from a JSON-like dict (e.g. a run's config.json), each value
  checked against its declaration: unknown names, wrong types and values out of
  bounds raise ValueError naming `source` and the setting."""
  if not isinstance(values, dict):
    raise ValueError(f"{source}: expected a JSON object of settings, got "
                     f"{type(values).__name__}")
  declared = {f.name: f for f in fields(cls)}
  unknown = sorted(set(values) - set(declared))
  if unknown:
    raise ValueError(f"{source}: unknown setting {unknown[0]!r} (known: "
                     f"{', '.join(sorted(declared))}); remove it")
  out = {}
  for name, value in values.items():
    typ, is_tuple, optional = base_type(cls, declared[name])
    if value is None and optional:
      out[name] = None
      continue
    if is_tuple:
      ok = isinstance(value, (list, tuple)) and all(_is(v, typ) for v in value)
      value = tuple(typ(v) for v in value) if ok else value
    else:
      ok = _is(value, typ)
      value = typ(value) if ok else value
    if not ok:
      kind = _KINDS.get(typ, typ.__name__)
      raise ValueError(f"{source}: {name}={json_repr(value)}: must be "
                       f"{'a list of ' + kind + 's' if is_tuple else _article(kind) + kind}")
    out[name] = value
  try:
    return cls(**out)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from None


_KINDS = {int: "integer", float: "number", str: "string", bool: "boolean (true or false)"}


def _article(noun: str) -> str:
  return "an " if noun[0] in "aeiou" else "a "


def _is(value, typ) -> bool:
  if typ is bool:
    return isinstance(value, bool)
  if typ is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if typ is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  return isinstance(value, typ)


def json_repr(value) -> str:
  try:
    return json.dumps(value)
  except TypeError:
    return repr(value)
