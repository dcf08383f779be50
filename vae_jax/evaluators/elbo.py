"""The ELBO of the test set: at L = 1 and at a larger L (`evaluate.elbo_means`)."""

import dataclasses
import logging

import jax

from vae_jax import evaluate
from vae_jax import labels
from vae_jax import settings
from vae_jax.evaluators import base
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class Options(settings.Settings):
  """The ELBO (--method=elbo)."""
  large_L: int = setting(100, "Samples of z for the second ELBO estimate.", lower=1)


class Evaluator(base.Method):
  """The test ELBO at L = 1 and at L = --large_L; during training, at the run's L."""

  Options = Options
  trains_along = True

  def run(self, ctx) -> dict:
    out = {}
    for L in (1, self.options.large_L):
      name = f"elbo_L{L}"
      if ctx.kept.result(name) is None:
        logging.info("test ELBO, L=%d, on %d images: one compiled pass", L,
                     labels.num_rows(ctx.x))
        # About 60 MB of decoder outputs at once.
        ctx.kept.finish(name, self._means(ctx, L, max(1, min(1000, 20_000 // L))))
        logging.info("test ELBO, L=%d: %.3f nats", L, ctx.kept.result(name)["elbo"])
      out[name] = ctx.kept.result(name)
    return out

  def _means(self, ctx, num_samples: int, batch_size: int) -> dict:
    means = evaluate.elbo_means(ctx.model.parts, ctx.params, ctx.x, ctx.key,
                                num_samples=num_samples, estimator=ctx.config.estimator,
                                batch_size=batch_size)
    return {k: float(v) for k, v in jax.device_get(means).items()}

  def headline(self, result: dict) -> dict:
    return {name: value["elbo"] for name, value in result.items()}

  def during_training(self):
    """The test ELBO with the run's own L and estimator: test_elbo, _reconstruction, _kl."""
    config = self.config

    def fn(model, params, x, key):
      means = evaluate.elbo_means(model.parts, params, x, key, num_samples=config.num_samples,
                                  estimator=config.estimator,
                                  batch_size=config.eval_batch_size)
      return {f"test_{k}": v for k, v in means.items()}
    return fn
