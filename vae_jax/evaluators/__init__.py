"""Evaluation methods by name, each one module (big_vision's `evaluators/` shape).

A method's module declares its own settings (`Options`, a `settings.Settings` class:
`experiments.evaluate` derives its flags from them) and

  run(options, ctx: Context) -> dict               # its entries of evaluation.json
  headline(result: dict) -> dict                   # their TensorBoard scalars (eval/...)
  scope(options, n) -> str                         # optional: what it scores of n test images

and, where it can score a run every `eval_every` epochs (`RunConfig.eval_methods`),

  during_training(config) -> (model, params, x, key) -> dict   # metrics.jsonl entries

The long ones (the k-sample bound, AIS, BDMC) run on `engine.run`. Adding a method is
its module plus its line in `EVALUATORS`.
"""

import json
import logging
from typing import Any, Callable, NamedTuple

import numpy as np

from vae_jax import multihost
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.evaluators import ais_chains
from vae_jax.evaluators import bdmc
from vae_jax.evaluators import elbo
from vae_jax.evaluators import iwae
from vae_jax.evaluators import latent_usage

EVALUATORS = {"elbo": elbo, "iwae": iwae, "ais": ais_chains, "bdmc": bdmc,
              "latent_usage": latent_usage}
# The methods a training run can take every eval_every epochs (cheap enough to repeat).
DURING_TRAINING = tuple(n for n, m in EVALUATORS.items() if hasattr(m, "during_training"))


class Context(NamedTuple):
  """What an evaluation method is given: the run and its test inputs."""
  config: Any  # the run's `RunConfig`
  model: Any  # init(key) and parts(params)
  params: Any
  x: Any  # `[n, ...]` the test set's model inputs
  key: Any  # the evaluation's key; example j of x uses fold_in(key, j)
  stop: Callable[[], bool]  # polled between compiled calls (True: stop)
  kept: "Kept"  # finished parts and interrupted sums (a rerun continues from them)
  options: dict  # every method's Options, by class (a method may use another's)


def get(name: str):
  """The module of method `name`."""
  if name not in EVALUATORS:
    raise ValueError(f"method={name}: expected one of {list(EVALUATORS)}"
                     f"{settings.nearest(name, EVALUATORS)}")
  return EVALUATORS[name]


def scope(name: str, options: dict, n: int) -> str:
  """What method `name` scores of the n test images, for the first log line; `options`:
  every method's Options by class."""
  module = get(name)
  if hasattr(module, "scope"):
    return module.scope(options.get(getattr(module, "Options", None)), n)
  return f"{name} on all {n} test images"


def options_classes() -> list[type]:
  """The methods' Options classes, each once (BDMC takes AIS's)."""
  out = []
  for m in EVALUATORS.values():
    if hasattr(m, "Options") and m.Options not in out:
      out.append(m.Options)
  return out


def during_training(names, config) -> Callable[..., dict]:
  """(model, params, x, key) -> the metrics of methods `names`, one dict."""
  fns = [get(n).during_training(config) for n in names]
  return lambda model, params, x, key: {k: v for fn in fns
                                        for k, v in fn(model, params, x, key).items()}


class Kept:
  """An evaluation's finished parts ({name: result}) and an interrupted method's block
  sums, under the settings that made them; with a `path` (process 0 writes it after
  each change), a rerun with the same settings continues from them."""

  def __init__(self, path=None, settings: dict | None = None):
    self.path, self.state = path, {"settings": settings, "results": {}, "blocks": {}}
    if path is None or not path.is_file():
      return
    try:
      kept = workdir_lib.read_json(path)
    except ValueError:
      kept = None
    if not (isinstance(kept, dict) and isinstance(kept.get("settings"), dict)
            and isinstance(kept.get("results"), dict) and isinstance(kept.get("blocks"), dict)
            and all(isinstance(b, dict) for b in kept["blocks"].values())):
      logging.warning("%s: damaged; starting the evaluation afresh", path)
      return
    if kept["settings"] != settings:
      differ = sorted(k for k in {**kept["settings"], **(settings or {})}
                      if kept["settings"].get(k) != (settings or {}).get(k))
      logging.warning("%s: kept by an evaluation with other %s; starting afresh", path,
                      ", ".join(differ))
      return
    self.state = kept

  def done(self) -> list[str]:
    return list(self.state["results"])

  def result(self, name: str):
    """A finished part's result, or None."""
    return self.state["results"].get(name)

  def finish(self, name: str, result) -> None:
    self.state["results"][name] = result
    self.state["blocks"].pop(name, None)
    self._save()

  def resume(self, name: str) -> dict | None:
    """What `engine.run`'s `on_block` kept of method part `name`, or None."""
    return self.state["blocks"].get(name)

  def on_block(self, name: str) -> Callable[[dict], None]:
    def keep(blocks: dict) -> None:
      self.state["blocks"][name] = blocks
      self._save()
    return keep

  def _save(self) -> None:
    if self.path is not None and multihost.is_primary():
      workdir_lib.write_atomic(self.path, json.dumps(self.state) + "\n")

  def scoped(self, prefix: str) -> "Kept":
    """A view whose names all start with `prefix` (e.g. one replica's parts)."""
    return _Scoped(self, prefix)

  def remove(self) -> None:
    if self.path is not None and multihost.is_primary() and self.path.exists():
      self.path.unlink()


class _Scoped:
  """`Kept.scoped`: the same store, every name prefixed."""

  def __init__(self, kept: Kept, prefix: str):
    self.kept, self.prefix = kept, prefix

  def result(self, name: str):
    return self.kept.result(self.prefix + name)

  def finish(self, name: str, result) -> None:
    self.kept.finish(self.prefix + name, result)

  def resume(self, name: str) -> dict | None:
    return self.kept.resume(self.prefix + name)

  def on_block(self, name: str) -> Callable[[dict], None]:
    return self.kept.on_block(self.prefix + name)


# The figures whose spread over replicas (--seeds) a result reports as NAME_sd.
SPREAD = ("log_px", "elbo", "active_units", "gap")


def over_seeds(results: list, spread: Callable[[str], bool] = SPREAD.__contains__) -> Any:
  """One result from N replicas' results of the same method (or N metrics lines): each
  number the mean over the replicas (a Monte Carlo standard error that of the mean,
  sqrt(mean(se^2) / N)), the standard deviation over them (ddof 1) of the figures whose
  name `spread` accepts (default: those in `SPREAD`) beside as NAME_sd, anything else
  (and a number every replica shares, an epoch) the first replica's."""
  first = results[0]
  if isinstance(first, dict):
    out = {}
    for k, v in first.items():
      values = [r[k] for r in results]
      out[k] = over_seeds(values, spread)
      if spread(k) and isinstance(v, (int, float)) and not isinstance(v, bool):
        out[f"{k}_sd"] = float(np.std(values, ddof=1))
      if k == "mc_stderr" and all(isinstance(x, (int, float)) for x in values):
        out[k] = float(np.sqrt(np.mean(np.square(values)) / len(values)))
    return out
  if (isinstance(first, (int, float)) and not isinstance(first, bool)
      and any(r != first for r in results)):
    return float(np.mean(results))
  return first
