"""Evaluates a trained run on its test set, with the methods of `vae_jax.evaluators`.

  python -m experiments.evaluate --workdir=runs/mnist                 # ELBO, IWAE k = 5000
  python -m experiments.evaluate --workdir=runs/mnist --method=ais    # AIS, and IWAE beside it
  python -m experiments.evaluate --workdir=runs/mnist --method=bdmc   # AIS's gap, simulated data

--method lists the methods, by name (default: elbo,iwae):
elbo: the ELBO with L = 1 and L = --large_L;
iwae: the importance-sampled log-likelihood (the IWAE bound with k = --k) of every
test image; ais: annealed importance sampling (`vae_jax.ais`) on the first
--ais_examples test images, and the k-sample bound of the same images beside it;
bdmc: both AIS chains on --ais_examples images simulated from the model: the forward
one bounds log p(x) from below, the reverse one from above; their gap says how far
AIS with these settings can be from the truth. The active units and the KL of each
latent dimension (latent_usage) are always written.

Each method adds its figures to WORKDIR/evaluation.json beside those of the others for
the same epoch (nats per image, with standard errors, time and peak memory). The
expected time is logged before the work and a progress line as it goes; Ctrl-C stops
it within seconds, and the same command continues from what was finished.
"""

import dataclasses
import json

import jax
from absl import logging

from . import cli
from . import cluster
from . import sweep
from vae_jax import checkpoint
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import datasets
from vae_jax import evaluate
from vae_jax import evaluators
from vae_jax import hooks
from vae_jax import labels
from vae_jax import memory
from vae_jax import multihost
from vae_jax import runner
from vae_jax import settings
from vae_jax import trackers
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class EvaluateOptions(settings.Settings):
  """What `experiments.evaluate` computes."""
  workdir: str = setting("", "The workdir of the training run to evaluate (required).")
  model: str = setting("", "The MODULE:FUNCTION that built a run of your own model, as "
                       "trained: the run's config.json names it, and it is imported only "
                       "when named here too (as you would unpickle only what you trust).")
  eval_seed: int = setting(0, "Key of the evaluation's samples.", lower=0, upper=2 ** 63 - 1)
  epoch: int | None = setting(None, "Which checkpoint (default: the latest).", lower=1)
  method: tuple[str, ...] = setting(
      ("elbo", "iwae"), "The evaluation methods, by name: elbo (L = 1 and --large_L), iwae "
      "(the k-sample bound of every test image), ais (annealed importance sampling of the "
      "first --ais_examples, a tighter lower bound), bdmc (AIS's lower and upper bounds on "
      "simulated data); latent_usage (active units) always runs.",
      choices=tuple(evaluators.EVALUATORS), unique=True, nonempty=True)


# Each method's settings under its name (BDMC shares AIS's).
METHOD_SCHEMAS = {next(n for n, m in evaluators.EVALUATORS.items() if m.Options is cls): cls
                  for cls in evaluators.options_classes()}


def _methods(opts: EvaluateOptions) -> tuple[str, ...]:
  return opts.method + (() if "latent_usage" in opts.method else ("latent_usage",))


def evaluate_run(ns) -> dict:
  opts = ns.evaluate
  if not opts.workdir:
    raise ValueError("workdir='': pass the workdir of a training run, e.g. workdir=runs/mnist")
  workdir = sweep.workdir(opts.workdir, "")
  config, model, state, epoch = runner.load_run(workdir, opts.epoch,
                                                   model=opts.model or None)
  if multihost.is_primary():  # before the work, not after it
    workdir_lib.check_writable(workdir)
  dataset = datasets.load_for(config, ns.data)
  _, sizes = config_lib.read_run_config(workdir / "config.json")
  # A conditional run scores log p(x|y): the test labels travel with the images.
  _, test_x = data_lib.model_inputs(dataset, config.binarize,
                                    sizes.get("num_classes", 0) if config.labelled else 0)
  n = labels.num_rows(test_x)
  options = {cls: getattr(ns, name) for name, cls in METHOD_SCHEMAS.items()}
  methods = {name: evaluators.build(name, options, config) for name in _methods(opts)}
  logging.info("Evaluating %s (epoch %d) with %s", workdir, epoch,
               ", ".join(m.scope(n) for m in methods.values()))
  result = _previous(workdir, epoch)
  result.update({"workdir": str(workdir), "epoch": epoch})
  flat = {k: v for o in options.values() for k, v in dataclasses.asdict(o).items()}
  # Keyed by what was scored: the checkpoint's arrays and the test inputs, by sha256
  # (a copied run folder or a replaced checkpoint of the same epoch is another model).
  scored = {"checkpoint_sha256": checkpoint.checksum(state.params).tobytes().hex(),
            "data_sha256": checkpoint.checksum(test_x).tobytes().hex()}
  kept = evaluators.Kept(workdir / "evaluation.partial.json",
                         {"epoch": epoch, "eval_seed": opts.eval_seed, "test_examples": n,
                          **scored, **flat})
  if kept.done():
    logging.info("%s: continuing an interrupted evaluation (%s done)", kept.path,
                 ", ".join(kept.done()))
  figures = {}
  with workdir_lib.StopRequest() as stop:
    poll = lambda: multihost.any_process(stop.signal is not None)
    replicas = [state.params] if config.seeds == 1 else [
        hooks.replica(state.params, r) for r in range(config.seeds)]
    for name, method in methods.items():
      parts = []
      for r, params in enumerate(replicas):
        if len(replicas) > 1:
          logging.info("%s: replica %d of %d (seed %d)", name, r + 1, len(replicas),
                       config.seed + r)
        parts.append(_run_method(method, evaluators.Context(
            config, model, params, test_x, jax.random.key(opts.eval_seed), poll,
            kept.scoped(f"replica{r}/") if len(replicas) > 1 else kept)))
      part = parts[0] if len(parts) == 1 else _over_seeds(name, parts)
      result.update(part)
      figures.update(method.headline(part))
  result["peak_memory_mb"] = evaluate.peak_memory_mb()
  if multihost.is_primary():
    workdir_lib.write_atomic(workdir / "evaluation.json", json.dumps(result, indent=2) + "\n")
    workdir_lib.add_evaluation(workdir, epoch, figures)
    trackers.log_evaluation(config.tracker, workdir, epoch, figures)
  kept.remove()
  return result


def _over_seeds(name: str, parts: list[dict]) -> dict:
  """Method `name`'s results of the replicas as one: the means, the s.d. over seeds
  (NAME_sd) and each replica's own under "replicas"."""
  out = {k: evaluators.over_seeds([p[k] for p in parts]) for k in parts[0]}
  for k, v in out.items():
    if isinstance(v, dict) and "log_px_sd" in v:
      logging.info("%s over %d seeds: log p(x) %.3f +- %.3f (s.d. over seeds; Monte Carlo s.e. "
                   "of the mean %.4f)", k, len(parts), v["log_px"], v["log_px_sd"],
                   v.get("mc_stderr", float("nan")))
    if isinstance(v, dict):
      out[k] = {**v, "replicas": [p[k] for p in parts]}
  return out


def _run_method(method, ctx: evaluators.Context) -> dict:
  """`method` on `ctx`; a memory refusal names this command's flags."""
  try:
    return method.run(ctx)
  except memory.TooLarge as e:
    flags = method.options.memory_flags if method.options is not None else ""
    raise ValueError(f"{e.what}; lower {flags or e.fix}") from None


def _previous(workdir, epoch: int) -> dict:
  """The figures evaluation.json already holds for this epoch (another method's), or {}."""
  path = workdir / "evaluation.json"
  if not path.is_file():
    return {}
  try:
    previous = workdir_lib.read_json(path)
  except ValueError:
    logging.warning("%s is unreadable; writing it anew", path)
    return {}
  if previous.get("epoch") != epoch:
    logging.info("%s holds epoch %s; writing it anew for epoch %d", path, previous.get("epoch"),
                 epoch)
    return {}
  return previous


def _memory_flags(ns) -> str:
  """The flags that lower the chosen methods' memory."""
  found = [cls.Options.memory_flags for cls in map(evaluators.get, ns.evaluate.method)
           if cls.Options is not None]
  return " or ".join(f for f in dict.fromkeys(found) if f) or "--iwae_batch_size or --chunk_size"


# The library's arguments of the log p(x) estimate, as this entry point's flags.
ENTRY = cli.Entry(evaluate_run, {"evaluate": EvaluateOptions, **METHOD_SCHEMAS,
                                 "data": datasets.DataOptions, "cluster": cluster.ClusterOptions},
                  renames={"batch_size": "iwae_batch_size", "num_samples": "k"},
                  memory_flags=_memory_flags)


def main(argv: list[str] | None = None) -> int:
  return cli.main(ENTRY, argv)


def console() -> None:
  """The installed package's `vae-jax-evaluate` command: `python -m experiments.evaluate`."""
  cli.run(main)


if __name__ == "__main__":
  console()
