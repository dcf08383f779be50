"""Bidirectional Monte Carlo on examples simulated from the model (`ais.bdmc`): AIS's
lower bound and the reverse chain's upper bound of log p(x), and their gap, which says
how far AIS with these settings can be from the truth."""

import logging

from vae_jax import ais
from vae_jax import evaluate
from vae_jax.evaluators import ais_chains
from vae_jax.evaluators import base

Options = ais_chains.Options  # the same settings as AIS's


class Evaluator(base.Method):
  """Both AIS chains on examples simulated from the model, and their gap."""

  Options = Options

  def run(self, ctx) -> dict:
    if ctx.config.labelled:
      raise ValueError("method=bdmc: simulates data from p(z) p(x|z), and this conditional "
                       "run has p(x|z, y); use --method=ais (or iwae) for log p(x|y)")
    dim = int(evaluate.encoder_means(ctx.model.parts, ctx.params, ctx.x[:1]).shape[-1])
    result = ais.bdmc(ctx.model.parts, ctx.params, ctx.key,
                      num_examples=self.options.ais_examples, dim=dim, stop=ctx.stop,
                      keep=ctx.kept.scoped("bdmc/"), **self.options.library_args())
    logging.info("BDMC on %d simulated examples: %.3f <= log p(x) <= %.3f nats, gap %.3f",
                 result["n"], result["lower"]["log_px"], result["upper"]["log_px"],
                 result["gap"])
    return {"bdmc": result}

  def scope(self, n: int) -> str:
    del n  # simulated, not the test set's
    return f"bdmc on {self.options.ais_examples} examples simulated from the model"

  def headline(self, result: dict) -> dict:
    value = result["bdmc"]
    return {"bdmc_lower": value["lower"]["log_px"], "bdmc_upper": value["upper"]["log_px"],
            "bdmc_gap": value["gap"]}
