"""The training commands' body: one run, or a sweep over the grid of any settings'
values (`--sweep=beta=0.5,1 --sweep=latent_dim=2,5`; `--latent_dims=2,5,10` is the
sweep over latent_dim), each point a resumable run in its own folder, split over
machines by `--shard=I/N`, and summarized at the sweep's root."""

import csv
import dataclasses
import functools
import importlib
import io
import itertools
import pathlib
import urllib.parse

from absl import logging

from . import errors
from vae_jax import config as config_lib
from vae_jax import datasets
from vae_jax import multihost
from vae_jax import plots
from vae_jax import presets
from vae_jax import runner
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class TrainOptions(settings.Settings):
  """The run folder, presets and sweeps."""
  workdir: str | None = setting(None, "Where checkpoints, metrics and pictures go (default: "
                                "runs/<dataset>); a sweep's points go in its subfolders.")
  preset: str | None = setting(None, "Start from a named configuration (--list_presets lists "
                               "each with its result); flags given on the command line still "
                               "win.", choices=sorted(presets.PRESETS))
  config: str | None = setting(None, "PATH.py[:ARG]: start from an experiment file whose "
                               "get_config() (or get_config(ARG)) returns a RunConfig or a dict "
                               "of its settings, as in the Flax examples; --config.FIELD=VALUE "
                               "is another spelling of a setting's flag, and flags win.")
  sweep: tuple[str, ...] = setting(
      (), "SETTING=V1,V2,...: train one run per value, in WORKDIR/SETTING=V; repeat the flag "
      "for the grid of several settings (--sweep=beta=0.5,1 --sweep=latent_dim=2,5: four "
      "runs). Any setting a flag sets, by its flag or field name; list settings separate "
      "their values with ';' (--sweep='hidden_sizes=200;400,400'). Finished points are "
      "skipped; WORKDIR/summary.{csv,md,png} sum up every point.", repeat=True)
  latent_dims: tuple[int, ...] = setting(
      (), "Sweep over latent sizes (e.g. 2,5,10,20,200): the same as "
      "--sweep=latent_dim=2,5,10,20,200.", lower=1, unique=True)
  shard: str = setting("", "I/N: train only the sweep's points whose index is I modulo N (0 "
                       "<= I < N), so N copies of the command (a Slurm array job) split the "
                       "grid.")
  summarize: bool = setting(False, "Write the sweep's summary from its points' own files and "
                            "exit, training nothing.")
  fresh: bool = setting(False, "Delete the workdir's checkpoints and metrics and start over "
                        "instead of resuming.")
  hooks: tuple[str, ...] = setting(
      (), "MODULE:FUNCTION of your own actions in the training loop: FUNCTION(config) returns "
      "an action (a callable (loop, end), e.g. a vae_jax.hooks.PeriodicAction) or a list of "
      "them; repeat the flag for several. Imported only when named here, never from a run "
      "folder.", repeat=True)
  list_presets: bool = setting(False, "Print every --preset: its name, what it is and its "
                               "measured result; then exit.")


def list_presets() -> str:
  """Every preset: its name, what it is, and its measured (or the paper's) result."""
  lines = []
  for name in sorted(presets.PRESETS):
    what, result = presets.describe(name)
    lines.append(f"{name}\n    {what}" + (f"\n    {result}" if result else ""))
  return "\n".join(lines) + "\n\n--preset=NAME starts from one; flags given beside it win."


def workdir(path: str | None, default: str) -> pathlib.Path:
  """`path` (or `default`) with ~ expanded; an empty one refused (it would write into
  the current directory)."""
  path = default if path is None else path
  if not path.strip():
    raise ValueError(f"workdir={path!r}: empty; pass a directory, e.g. workdir=runs/mnist")
  return pathlib.Path(path).expanduser()


def entry(default_preset: str | None = None):
  """The training commands' `cli.Entry`: the run's settings (from --preset, or
  `default_preset`), the data options, these options and the cluster's."""
  from . import cli, cluster  # pylint: disable=g-import-not-at-top
  from vae_jax import config  # pylint: disable=g-import-not-at-top
  return cli.Entry(train_main, {"run": config.RunConfig, "data": datasets.DataOptions,
                                "train": TrainOptions, "cluster": cluster.ClusterOptions},
                   preset=functools.partial(_base, default_preset=default_preset))


def _base(fv, default_preset: str | None) -> str | None:
  """Where the run's settings start: --config's file, --preset's name, or the command's."""
  from . import cli  # pylint: disable=g-import-not-at-top
  if fv["config"].value and fv["preset"].value:
    raise ValueError(f"config={fv['config'].value} and preset={fv['preset'].value}: both say "
                     f"where the settings start; give one")
  if fv["config"].value:
    return cli.CONFIG_SOURCE + fv["config"].value
  return fv["preset"].value or default_preset


def train_main(ns) -> list[dict] | dict:
  """Loads the data set of `ns.run` and trains it, or the points of its sweep."""
  if ns.train.list_presets:
    print(list_presets())
    return {}
  path = workdir(ns.train.workdir, f"runs/{ns.run.dataset}")
  specs = ns.train.sweep + ((f"latent_dim={','.join(map(str, ns.train.latent_dims))}",)
                            if ns.train.latent_dims else ())
  points = grid(ns.run, specs)  # every point checked before any work
  shard = parse_shard(ns.train.shard)
  if ns.train.shard and not points:
    raise ValueError(f"shard={ns.train.shard}: shares out a sweep's points, and there is no "
                     f"sweep; add --sweep=SETTING=V1,V2,... or drop --shard")
  for point in points[:1]:
    for name in point:
      users = DATASET_SETTINGS.get(name)
      if users and ns.run.dataset not in users:
        raise ValueError(f"sweep={name}=...: dataset={ns.run.dataset} ignores {name} (only "
                         f"{' and '.join(users)} read it); sweep another setting or change "
                         f"dataset")
  for name in ns.train.hooks:  # checked before any work
    _hook_maker(name)
  if ns.train.summarize:  # a single run: its own row, shown and not written
    return write_summary(path, ns.run, points) if points else show_run(path, ns.run)
  logging.info("Loading the data set %s", ns.run.dataset)
  dataset = datasets.load_for(ns.run, ns.data)
  if not points:
    errors.check_interrupted()
    return runner.train_and_evaluate(ns.run, dataset, path, fresh=ns.train.fresh,
                                     hooks=user_hooks(ns.train.hooks, ns.run))
  return train_points(ns.run, dataset, path, points, shard, ns.train.fresh, ns.train.hooks)


def user_hooks(names: tuple[str, ...], config) -> tuple:
  """The actions each MODULE:FUNCTION of `names` makes for `config` (`--hooks`)."""
  actions = []
  for name in names:
    made = _hook_maker(name)(config)
    made = tuple(made) if isinstance(made, (list, tuple)) else (made,)
    if not made or not all(callable(a) for a in made):
      raise ValueError(f"hooks={name}: returned {made!r}, not actions (callables of "
                       f"(loop, end)); {_HOOK_FIX}")
    actions += made
  return tuple(actions)


_HOOK_FIX = "give MODULE:FUNCTION of a function (config) -> action(s) on the Python path"


def _hook_maker(name: str):
  """FUNCTION of "MODULE:FUNCTION", imported (one line naming --hooks if it cannot be)."""
  module, _, attr = name.partition(":")
  if not module or not attr.isidentifier():
    raise ValueError(f"hooks={name}: not of the form MODULE:FUNCTION; {_HOOK_FIX}")
  try:
    make = getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"hooks={name}: cannot import it ({e}); {_HOOK_FIX}") from None
  if not callable(make):
    raise ValueError(f"hooks={name}: is a {type(make).__name__}, not a function; {_HOOK_FIX}")
  return make


# The settings only some data sets read: sweeping them over another is refused.
DATASET_SETTINGS = {"data_path": ("npz", "folder"), "tfds_name": ("tfds",),
                    "image_size": ("folder",)}


class Point(dict):
  """One point of a sweep: {setting: value}, named by its folder (one path component:
  a value's "/" and other characters a folder name cannot hold are %-escaped)."""

  @property
  def name(self) -> str:
    return ",".join(f"{k}={_text(v)}" for k, v in self.items())


def _text(value) -> str:
  text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
  return urllib.parse.quote(text, safe=",=+-.:@_ ")


def _field(name: str) -> dataclasses.Field:
  """The RunConfig setting a sweep names, by its field name or its flag."""
  for f in settings.fields(config_lib.RunConfig):
    if name in (f.name, settings.flag_name(f)):
      return f
  raise ValueError(f"sweep={name}=...: {name} is not a setting of a run; sweep one of "
                   f"{', '.join(sorted(settings.flag_name(f) for f in settings.fields(config_lib.RunConfig)))}")


def _value(spec: str, field: dataclasses.Field, text: str):
  typ, is_tuple, _ = settings.base_type(config_lib.RunConfig, field)
  convert = {bool: lambda t: {"true": True, "false": False, "1": True, "0": False}[t.lower()],
             int: int, float: float}.get(typ, typ)
  try:
    return tuple(convert(t) for t in text.split(",")) if is_tuple else convert(text)
  except (ValueError, KeyError):
    raise ValueError(f"sweep={spec}: {text!r} is not a value of {field.name} (a "
                     f"{'list of ' if is_tuple else ''}{typ.__name__})") from None


def grid(base: config_lib.RunConfig, specs) -> list[Point]:
  """The points of `specs` ("SETTING=V1,V2,..." each; their grid, the first varying
  slowest), each checked as a whole RunConfig: a bad value raises ValueError naming it."""
  axes = []
  for spec in specs:
    name, sep, values = spec.partition("=")
    if not sep or not values:
      raise ValueError(f"sweep={spec}: expected SETTING=V1,V2,... (e.g. sweep=beta=0.5,1)")
    field = _field(name.strip())
    _, is_tuple, _ = settings.base_type(config_lib.RunConfig, field)
    texts = values.split(";") if is_tuple else values.split(",")
    if any(field.name == f for f, _ in axes):
      raise ValueError(f"sweep={spec}: {field.name} is swept twice; give its values once")
    axes.append((field.name, [_value(spec, field, t.strip()) for t in texts]))
  points = [Point(zip([a for a, _ in axes], combo))
            for combo in itertools.product(*[v for _, v in axes])] if axes else []
  for p in points:
    try:
      dataclasses.replace(base, **p)
    except ValueError as e:
      raise ValueError(f"sweep point {p.name}: {e}") from None
  if len({p.name for p in points}) != len(points):
    raise ValueError(f"sweep={' '.join(specs)}: lists a value twice; give each once")
  return points


def parse_shard(text: str) -> tuple[int, int]:
  """(I, N) of "I/N" (0 <= I < N); (0, 1) for ""."""
  if not text:
    return 0, 1
  try:
    i, n = (int(v) for v in text.split("/"))
  except ValueError:
    raise ValueError(f"shard={text}: expected I/N, e.g. shard=0/4") from None
  if not 0 <= i < n:
    raise ValueError(f"shard={text}: needs 0 <= I < N")
  return i, n


def _finished(path: pathlib.Path, epochs: int) -> bool:
  records = workdir_lib.read_metrics(path / "metrics.jsonl") if path.is_dir() else []
  return bool(records) and records[-1]["epoch"] >= epochs


def train_points(base, dataset, path: pathlib.Path, points: list[Point], shard=(0, 1),
                 fresh: bool = False, hooks: tuple[str, ...] = ()) -> list[dict]:
  """Trains this shard's points (index I modulo N) of a sweep, each in PATH/<its name>
  with the actions `hooks` (MODULE:FUNCTION names) make for it, skipping finished ones;
  then writes the summary of every point."""
  i, n = shard
  mine = [(k, p) for k, p in enumerate(points) if k % n == i]
  for k, p in mine:
    config, sub = dataclasses.replace(base, **p), path / p.name
    errors.check_interrupted()
    if not fresh and _finished(sub, config.epochs):
      logging.info("Sweep: point %d of %d (%s) is finished; skipped", k + 1, len(points), p.name)
      continue
    logging.info("Sweep: point %d of %d (%s) in %s", k + 1, len(points), p.name, sub)
    runner.train_and_evaluate(config, dataset, sub, fresh=fresh,
                              hooks=user_hooks(hooks, config))
  return write_summary(path, base, points)


FIGURES = ("test_elbo", "log_px", "active_units")


def summary_rows(path: pathlib.Path, base, points: list[Point]) -> list[dict]:
  """A row per point from its own files: its settings, the epochs it trained, its last
  test ELBO and KL, log p(x) where `experiments.evaluate` scored it, active units,
  minutes of training, and whether it is finished."""
  rows = []
  for p in points:
    sub, epochs = path / p.name, dataclasses.replace(base, **p).epochs
    records = workdir_lib.read_metrics(sub / "metrics.jsonl") if sub.is_dir() else []
    last = records[-1] if records else {}
    log_px = None
    if (sub / "evaluation.json").is_file():
      ev = workdir_lib.read_json(sub / "evaluation.json")
      log_px = next((v["log_px"] for k, v in ev.items() if k.startswith("log_px_k")
                     and ev.get("epoch") == last.get("epoch")), None)
    status = ("done" if last.get("epoch", 0) >= epochs else
              f"{last['epoch']} of {epochs} epochs" if last else "not started")
    rows.append({**{k: _text(v) for k, v in p.items()}, "epochs": last.get("epoch", 0),
                 "test_elbo": last.get("test_elbo"),
                 "test_elbo_sd": last.get("test_elbo_sd"),  # over replicas (--seeds)
                 "test_kl": last.get("test_kl"),
                 "log_px": log_px, "active_units": last.get("active_units"),
                 "minutes": None if "wall_s" not in last else last["wall_s"] / 60,
                 "status": status})
  return rows


def show_run(path: pathlib.Path, config) -> list[dict]:
  """`--summarize` without a sweep: the run's row (as a sweep's summary gives it), logged."""
  rows = summary_rows(path, config, [Point()])
  if rows[0]["status"] == "not started":
    raise ValueError(f"--summarize: {path} holds no run yet (no metrics.jsonl); pass the "
                     f"workdir of a run or of a sweep")
  shown = {k: v for k, v in rows[0].items() if v is not None}  # the figures it has
  logging.info("Summary of %s (nats per image):\n%s", path,
               workdir_lib.markdown_table(list(shown), [list(shown.values())]))
  return rows


def write_summary(path: pathlib.Path, base, points: list[Point]) -> list[dict]:
  """WORKDIR/summary.csv and summary.md (a row per point) and, for a sweep of one
  setting, summary.png (each figure against its values); process 0 writes them."""
  rows = summary_rows(path, base, points)
  if not multihost.is_primary() or not rows:
    return rows
  path.mkdir(parents=True, exist_ok=True)
  text = io.StringIO()
  w = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
  w.writeheader()
  w.writerows(rows)
  workdir_lib.write_atomic(path / "summary.csv", text.getvalue())
  shown = [[("" if v is None else v) for v in r.values()] for r in rows]
  table = workdir_lib.markdown_table(list(rows[0]), shown)
  workdir_lib.write_atomic(path / "summary.md", table + "\n")
  axes = list(points[0])
  if len(axes) == 1:
    curves = {f: [(r[axes[0]], r[f]) for r in rows if r[f] is not None] for f in FIGURES}
    plots.save_sweep(path / "summary.png", axes[0], {f: c for f, c in curves.items() if c},
                     f"sweep over {axes[0]} ({path.name})")
  unfinished = [r for r in rows if r["status"] != "done"]
  logging.info("Summary (nats per image):\n%s", table)
  if unfinished:
    logging.info("Not finished: %s", ", ".join(points[k].name for k, r in enumerate(rows)
                                              if r["status"] != "done"))
  return rows
