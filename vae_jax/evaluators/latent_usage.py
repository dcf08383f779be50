"""Which latent dimensions the model uses on the test set: Burda et al.'s active units
and each dimension's KL (`evaluate.latent_usage`)."""

import logging

from vae_jax import evaluate
from vae_jax import labels
from vae_jax.evaluators import base


class Evaluator(base.Method):
  """Active units and each latent dimension's KL; during training, the active units."""

  trains_along = True

  def run(self, ctx) -> dict:
    usage = evaluate.latent_usage(ctx.model.parts, ctx.params, ctx.x)
    logging.info("active units: %d of %d (Cov_x E_q[u|x] > %g)", usage["active_units"],
                 len(usage["unit_variances"]), evaluate.ACTIVE_UNIT_THRESHOLD)
    return {"latent_usage": {"test_examples": labels.num_rows(ctx.x), **usage}}

  def headline(self, result: dict) -> dict:
    return {"active_units": result["latent_usage"]["active_units"]}

  def during_training(self):
    """active_units and latent_units of the test set (none for a posterior without a mean)."""
    def fn(model, params, x, key):
      del key
      try:
        usage = evaluate.latent_usage(model.parts, params, x)
      except AttributeError:  # a posterior without a mean (your own model's)
        return {}
      return {"active_units": usage["active_units"],
              "latent_units": len(usage["unit_variances"])}
    return fn
