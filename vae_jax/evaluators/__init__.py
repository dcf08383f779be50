"""Evaluation methods by name, one class each (big_vision's evaluators, as objects).

A method's module declares its settings (`Options`, a `settings.Settings` class:
`experiments.evaluate` derives its flags from them) and an `Evaluator` class (the
`base.Evaluator` protocol, on `base.Method`): built once by `build(name, options,
config)`, it gives `scope(n)`, `run(ctx)` (its entries of evaluation.json),
`headline(result)` (TensorBoard's eval/ scalars) and, where `trains_along`,
`during_training()` (the training loop's metrics every eval_every epochs). The long
ones (the k-sample bound, AIS, BDMC) run on `engine.run`. Adding a method is its
module plus its line in `EVALUATORS`.
"""

from typing import Any, Callable

import numpy as np

from vae_jax import settings
from vae_jax.evaluators import ais_chains
from vae_jax.evaluators import base
from vae_jax.evaluators import bdmc
from vae_jax.evaluators import classification
from vae_jax.evaluators import elbo
from vae_jax.evaluators import iwae
from vae_jax.evaluators import kept as kept_lib
from vae_jax.evaluators import latent_usage

Context = base.Context
Kept = kept_lib.Kept

EVALUATORS: dict[str, type] = {
    "elbo": elbo.Evaluator, "iwae": iwae.Evaluator, "ais": ais_chains.Evaluator,
    "bdmc": bdmc.Evaluator, "latent_usage": latent_usage.Evaluator,
    "classification": classification.Evaluator}
# The methods a training run can take every eval_every epochs (cheap enough to repeat).
DURING_TRAINING = tuple(n for n, cls in EVALUATORS.items() if cls.trains_along)


def get(name: str) -> type:
  """The Evaluator class of method `name`."""
  if name not in EVALUATORS:
    raise ValueError(f"method={name}: expected one of {list(EVALUATORS)}"
                     f"{settings.nearest(name, EVALUATORS)}")
  return EVALUATORS[name]


def build(name: str, options: dict, config) -> base.Evaluator:
  """Method `name` built from every method's options (by class; missing ones take their
  defaults) and the run's config."""
  return get(name)(name, options, config)


def options_classes() -> list[type]:
  """The methods' Options classes, each once (BDMC takes AIS's)."""
  return list(dict.fromkeys(cls.Options for cls in EVALUATORS.values() if cls.Options))


def during_training(names, config) -> Callable[..., dict]:
  """(model, params, x, key) -> the metrics of methods `names`, one dict."""
  fns = [build(n, {}, config).during_training() for n in names]
  return lambda model, params, x, key: {k: v for fn in fns
                                        for k, v in fn(model, params, x, key).items()}


# The figures whose spread over replicas (--seeds) a result reports as NAME_sd.
SPREAD = ("log_px", "elbo", "active_units", "gap", "test_error")


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
