"""Evaluates a trained run on its test set.

  python -m experiments.evaluate --workdir=runs/mnist                 # ELBO, IWAE k = 5000
  python -m experiments.evaluate --workdir=runs/mnist --method=ais    # AIS, and IWAE beside it
  python -m experiments.evaluate --workdir=runs/mnist --method=bdmc   # AIS's gap, simulated data

--method=iwae (the default): the ELBO with L = 1 and a large L, and the
importance-sampled log-likelihood (the IWAE bound with k = --k) of every test image.
--method=ais: annealed importance sampling (`vae_jax.ais`) on the first
--ais_examples test images, and the k-sample bound of the same images beside it.
--method=bdmc: both AIS chains on --ais_examples images simulated from the model: the
forward one bounds log p(x) from below, the reverse one from above; their gap says
how far AIS with these settings can be from the truth. Every method also writes the
active units and the KL of each latent dimension (`evaluate.latent_usage`).

Each method adds its figures to WORKDIR/evaluation.json beside those of the others for
the same epoch (nats per image, with standard errors, time and peak memory). The
expected time is logged before the work and a progress line as it goes; Ctrl-C stops
it within seconds.
"""

import dataclasses
import json

import jax
from absl import logging

from experiments import cli
from experiments import cluster
from experiments import sweep
from vae_jax import ais
from vae_jax import data as data_lib
from vae_jax import datasets
from vae_jax import evaluate
from vae_jax import multihost
from vae_jax import runner
from vae_jax import settings
from vae_jax import workdir as workdir_lib
from vae_jax.settings import setting


METHODS = ("iwae", "ais", "bdmc")


@dataclasses.dataclass(frozen=True)
class EvaluateOptions(settings.Settings):
  """What `experiments.evaluate` computes, and with how much memory at once."""
  workdir: str = setting("", "The workdir of the training run to evaluate (required).")
  model: str = setting("", "The MODULE:FUNCTION that built a run of your own model, as "
                       "trained: the run's config.json names it, and it is imported only "
                       "when named here too (as you would unpickle only what you trust).")
  k: int = setting(5000, "Importance samples of the log p(x) estimate.", lower=1)
  large_L: int = setting(100, "Samples of z for the second ELBO estimate.", lower=1)
  chunk_size: int = setting(500, "Importance samples evaluated at once.", lower=1)
  iwae_batch_size: int = setting(20, "Images evaluated at once for log p(x); memory grows "
                                 "with this times --chunk_size.", lower=1)
  block_size: int = setting(1000, "Images per progress line.", lower=1)
  eval_seed: int = setting(0, "Key of the evaluation's samples.", lower=0, upper=2 ** 63 - 1)
  epoch: int | None = setting(None, "Which checkpoint (default: the latest).", lower=1)
  method: str = setting("iwae", "iwae: the ELBO and the k-sample bound of every test image; "
                        "ais: annealed importance sampling (a tighter lower bound) of the first "
                        "--ais_examples; bdmc: AIS's lower and upper bounds on simulated data.",
                        choices=METHODS)
  ais_examples: int = setting(1000, "Test images (--method=ais) or simulated examples "
                              "(--method=bdmc) to evaluate.", lower=1)
  ais_intermediate: int = setting(1000, "AIS's intermediate distributions (moves) on the "
                                  "sigmoid schedule.", lower=1, upper=ais.MAX_INTERMEDIATE)
  ais_chains: int = setting(16, "AIS chains per example.", lower=1)
  ais_pilot_chains: int = setting(4, "Chains of the pilot run that adapts AIS's HMC step sizes "
                                  "(frozen for the estimate, so it stays unbiased).", lower=1)
  ais_start: str = setting("prior", "AIS's initial distribution: prior or posterior (q(z|x)).",
                           choices=ais.STARTS)
  leapfrog_steps: int = setting(10, "Leapfrog steps of each HMC move.", lower=1)
  ais_batch_size: int = setting(25, "Examples whose chains run at once.", lower=1)



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
  _, test_x = data_lib.model_inputs(dataset, config.binarize)
  key = jax.random.key(opts.eval_seed)
  n = test_x.shape[0]
  if opts.method == "ais" and opts.ais_examples > n:
    logging.warning("--ais_examples=%d: the test set has %d images; scoring all %d",
                    opts.ais_examples, n, n)
  scored = {"iwae": f"{n} test images", "ais": f"the first {min(n, opts.ais_examples)} test "
            f"images", "bdmc": f"{opts.ais_examples} examples simulated from the model"}
  logging.info("Evaluating %s (epoch %d) with %s on %s (the latent usage on all %d test "
               "images)", workdir, epoch, opts.method, scored[opts.method], n)
  result = _previous(workdir, epoch)
  result.update({"workdir": str(workdir), "epoch": epoch})
  partial = _Partial(workdir, {"epoch": epoch, "k": opts.k, "large_L": opts.large_L,
                               "eval_seed": opts.eval_seed, "test_examples": n})
  with workdir_lib.StopRequest() as stop:
    poll = lambda: multihost.any_process(stop.signal is not None)
    if opts.method == "iwae":
      result.update(_iwae(opts, config, model, state.params, test_x, key, poll, partial))
      partial.remove()
    elif opts.method == "ais":
      result[f"ais_from_{opts.ais_start}"] = _ais(opts, model, state.params,
                                                  test_x[:opts.ais_examples], key, poll)
    else:
      result["bdmc"] = _bdmc(opts, model, state.params, test_x, key, poll)
  usage = evaluate.latent_usage(model.parts, state.params, test_x)
  result["latent_usage"] = {"test_examples": int(test_x.shape[0]), **usage}
  logging.info("active units: %d of %d (Cov_x E_q[u|x] > %g)", usage["active_units"],
               len(usage["unit_variances"]), evaluate.ACTIVE_UNIT_THRESHOLD)
  result["peak_memory_mb"] = evaluate.peak_memory_mb()
  if multihost.is_primary():
    workdir_lib.write_atomic(workdir / "evaluation.json", json.dumps(result, indent=2) + "\n")
    workdir_lib.add_evaluation(workdir, epoch, _figures(result))
  return result


def _figures(result: dict) -> dict:
  """evaluation.json's headline numbers, for TensorBoard's eval/ tags."""
  out = {"active_units": result["latent_usage"]["active_units"]}
  for name, value in result.items():
    if name.startswith(("log_px_k", "ais_from_")):
      out[name] = value["log_px"]
    elif name.startswith("elbo_L"):
      out[name] = value["elbo"]
    elif name == "bdmc":
      out.update(bdmc_lower=value["lower"]["log_px"], bdmc_upper=value["upper"]["log_px"],
                 bdmc_gap=value["gap"])
  return out


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


class _Partial:
  """WORKDIR/evaluation.partial.json: the finished parts of an interrupted k-sample
  evaluation (its ELBOs, the log p(x) sums of its finished blocks) under the settings
  that made them; a rerun with the same settings continues from them."""

  def __init__(self, workdir, settings: dict):
    self.path, self.settings = workdir / "evaluation.partial.json", settings
    self.state = {"settings": settings, "result": {}, "log_px": None}
    if self.path.is_file():
      try:
        kept = workdir_lib.read_json(self.path)
      except ValueError:
        kept = {}
      if isinstance(kept, dict) and kept.get("settings") == settings:
        self.state = kept
        logging.info("%s: continuing an interrupted evaluation (%s done)", self.path,
                     ", ".join(kept["result"]) or "nothing")

  def save(self, **changes) -> None:
    self.state.update(changes)
    if multihost.is_primary():
      workdir_lib.write_atomic(self.path, json.dumps(self.state) + "\n")

  def remove(self) -> None:
    if multihost.is_primary() and self.path.exists():
      self.path.unlink()


def _iwae(opts, config, model, params, test_x, key, poll, partial: _Partial) -> dict:
  """The ELBO at L = 1 and --large_L, and the k-sample bound, of every test image; each
  part kept in `partial` as it finishes."""
  result = {"test_examples": int(test_x.shape[0]), **partial.state["result"]}
  for name, L in (("elbo_L1", 1), (f"elbo_L{opts.large_L}", opts.large_L)):
    if name in result:
      continue
    logging.info("test ELBO, L=%d, on %d images: one compiled pass", L, test_x.shape[0])
    batch = max(1, min(1000, 20_000 // L))  # about 60 MB of decoder outputs at once
    means = jax.device_get(evaluate.elbo_means(model.parts, params, test_x, key,
                                               num_samples=L, estimator=config.estimator,
                                               batch_size=batch))
    result[name] = {k: float(v) for k, v in means.items()}
    logging.info("test ELBO, L=%d: %.3f nats", L, result[name]["elbo"])
    partial.save(result=result)
  ll = _log_px(opts, model, params, test_x, key, poll, resume=partial.state["log_px"],
               on_block=lambda kept: partial.save(log_px=kept))
  result[f"log_px_k{opts.k}"] = ll
  logging.info("test log p(x) ~ %.3f nats (k=%d; Monte Carlo s.e. %.4f, over images %.3f), "
               "%.0fs, peak memory %.0f MB", ll["log_px"], opts.k, ll["mc_stderr"],
               ll["data_stderr"], ll["seconds"], evaluate.peak_memory_mb())
  return result


def _log_px(opts, model, params, x, key, poll, **keep) -> dict:
  """The k-sample bound of x; `keep`: `resume` and `on_block` (an interrupted run's parts)."""
  return evaluate.marginal_log_likelihood(
      model.parts, params, x, key, num_samples=opts.k, chunk_size=min(opts.chunk_size, opts.k),
      batch_size=opts.iwae_batch_size, block_size=opts.block_size, stop=poll, **keep)


def _ais_settings(opts) -> dict:
  return dict(num_chains=opts.ais_chains, num_intermediate=opts.ais_intermediate,
              start=opts.ais_start, num_leapfrog=opts.leapfrog_steps,
              pilot_chains=opts.ais_pilot_chains, batch_size=opts.ais_batch_size)


def _ais_call(fn, *args, **kwargs):
  """fn (an AIS driver) whose memory refusal names this command's flags."""
  try:
    return fn(*args, **kwargs)
  except ais.TooLarge as e:
    raise ValueError(f"{e.what}; {_memory_flags_of('ais')}") from None


def _memory_flags_of(method: str) -> str:
  if method == "iwae":
    return "lower --iwae_batch_size or --chunk_size"
  return "lower --ais_batch_size or --ais_chains"


def _ais(opts, model, params, x, key, poll) -> dict:
  """AIS of x, and the k-sample bound of the same images."""
  result = _ais_call(ais.log_likelihood, model.parts, params, x, key, stop=poll,
                     **_ais_settings(opts))
  logging.info("AIS log p(x) ~ %.3f nats (%d images; Monte Carlo s.e. %.4f, over images %.3f; "
               "acceptance %.2f), %.0fs", result["log_px"], result["n"], result["mc_stderr"],
               result["data_stderr"], result["acceptance"], result["seconds"])
  iwae = _log_px(opts, model, params, x, key, poll)
  logging.info("the same images: IWAE k=%d %.3f nats (AIS - IWAE: %.3f)", opts.k, iwae["log_px"],
               result["log_px"] - iwae["log_px"])
  return {**result, f"iwae_k{opts.k}_same_images": iwae}


def _bdmc(opts, model, params, test_x, key, poll) -> dict:
  """BDMC on --ais_examples examples simulated from the model."""
  dim = int(evaluate.encoder_means(model.parts, params, test_x[:1]).shape[-1])
  result = _ais_call(ais.bdmc, model.parts, params, key, num_examples=opts.ais_examples,
                     dim=dim, stop=poll, **_ais_settings(opts))
  logging.info("BDMC on %d simulated examples: %.3f <= log p(x) <= %.3f nats, gap %.3f",
               result["n"], result["lower"]["log_px"], result["upper"]["log_px"], result["gap"])
  return result


# The library's arguments of the log p(x) estimate, as this entry point's flags.
ENTRY = cli.Entry(evaluate_run, {"evaluate": EvaluateOptions, "data": datasets.DataOptions,
                                 "cluster": cluster.ClusterOptions},
                  renames={"batch_size": "iwae_batch_size", "num_samples": "k"},
                  memory_flags=lambda ns: _memory_flags_of(ns.evaluate.method)[len("lower "):])


def main(argv: list[str] | None = None) -> int:
  return cli.main(ENTRY, argv)


if __name__ == "__main__":
  cli.run(main)
