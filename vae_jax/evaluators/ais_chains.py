"""Annealed importance sampling of log p(x) on the first test images (`ais.log_likelihood`,
on `engine.run`), and the k-sample bound of the same images beside it."""

import dataclasses
import logging

from vae_jax import ais
from vae_jax import labels
from vae_jax import settings
from vae_jax.evaluators import base
from vae_jax.evaluators import iwae
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class Options(settings.Settings):
  """AIS and BDMC (--method=ais, --method=bdmc)."""
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

  memory_flags = "--ais_batch_size or --ais_chains"

  def library_args(self) -> dict:
    """These settings as `ais.log_likelihood`'s and `ais.bdmc`'s arguments."""
    return dict(num_chains=self.ais_chains, num_intermediate=self.ais_intermediate,
                start=self.ais_start, num_leapfrog=self.leapfrog_steps,
                pilot_chains=self.ais_pilot_chains, batch_size=self.ais_batch_size)


class Evaluator(base.Method):
  """AIS on the first --ais_examples test images, and the k-sample bound beside it."""

  Options = Options

  def run(self, ctx) -> dict:
    options = self.options
    x, n = labels.take(ctx.x, 0, options.ais_examples), labels.num_rows(ctx.x)
    if options.ais_examples > n:
      logging.warning("--ais_examples=%d: the test set has %d images; scoring all %d",
                      options.ais_examples, n, n)
    name = f"ais_from_{options.ais_start}"
    result = ctx.kept.result(name)
    if result is None:  # an interrupted run's batches are kept, and continued here
      result = ais.log_likelihood(ctx.model.parts, ctx.params, x, ctx.key, stop=ctx.stop,
                                  resume=ctx.kept.resume(name),
                                  on_block=ctx.kept.on_block(name), **options.library_args())
      ctx.kept.finish(name, result)
    logging.info("AIS log p(x) ~ %.3f nats (%d images; Monte Carlo s.e. %.4f, over images "
                 "%.3f; acceptance %.2f), %.0fs", result["log_px"], result["n"],
                 result["mc_stderr"], result["data_stderr"], result["acceptance"],
                 result["seconds"])
    k_opts = self.all_options.get(iwae.Options, iwae.Options())
    # The same quantity: AIS's chains run in z alone, a label given (log p(x|y)).
    same = iwae.log_px(k_opts, ctx, x, f"{name}/iwae_k{k_opts.k}", marginal=False)
    logging.info("the same images: IWAE k=%d %.3f nats (AIS - IWAE: %.3f)", k_opts.k,
                 same["log_px"], result["log_px"] - same["log_px"])
    return {name: {**result, f"iwae_k{k_opts.k}_same_images": same}}

  def scope(self, n: int) -> str:
    return f"ais on the first {min(n, self.options.ais_examples)} test images"

  def headline(self, result: dict) -> dict:
    return {name: value["log_px"] for name, value in result.items()}
