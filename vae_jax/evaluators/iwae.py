"""The importance-sampled log p(x) of the test set: the k-sample IWAE bound with k = 5000
as the papers report it (`evaluate.marginal_log_likelihood`, on `engine.run`). A
semi-supervised model's label is marginalised (a latent beside z: `M2Model.marginal_parts`);
a conditional model's is given (log p(x|y))."""

import dataclasses
import logging

from vae_jax import evaluate
from vae_jax import labels
from vae_jax import settings
from vae_jax.evaluators import base
from vae_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class Options(settings.Settings):
  """The k-sample bound (--method=iwae, and beside AIS)."""
  k: int = setting(5000, "Importance samples of the log p(x) estimate.", lower=1)
  chunk_size: int = setting(500, "Importance samples evaluated at once.", lower=1)
  iwae_batch_size: int = setting(20, "Images evaluated at once for log p(x); memory grows "
                                 "with this times --chunk_size.", lower=1)
  block_size: int = setting(1000, "Images per progress line.", lower=1)

  memory_flags = "--iwae_batch_size or --chunk_size"


def scored(config, model, x):
  """(parts_fn, rows) the bound is taken over: a semi-supervised model with its label a
  latent and the rows' images alone (log p(x)), any other model as given."""
  if config.builds("semi_supervised"):
    return model.marginal_parts, labels.inputs(x)
  return model.parts, x


def log_px(options: Options, ctx, x, name: str | None = None, *,
           marginal: bool = True) -> dict:
  """The k-sample bound of x (rows of the test set); with `name`, its finished blocks
  are kept in `ctx.kept` under that name and a rerun continues from them. `marginal`:
  a semi-supervised model's label marginalised (else given, as AIS scores it)."""
  keep = {} if name is None else dict(resume=ctx.kept.resume(name),
                                      on_block=ctx.kept.on_block(name))
  parts_fn, x = scored(ctx.config, ctx.model, x) if marginal else (ctx.model.parts, x)
  return evaluate.marginal_log_likelihood(
      parts_fn, ctx.params, x, ctx.key, num_samples=options.k,
      chunk_size=min(options.chunk_size, options.k), batch_size=options.iwae_batch_size,
      block_size=options.block_size, stop=ctx.stop, **keep)


class Evaluator(base.Method):
  """log p(x) by the k-sample bound of every test image; during training, with the
  run's own k (its iwae_samples), quietly."""

  Options = Options
  trains_along = True

  def run(self, ctx) -> dict:
    name = f"log_px_k{self.options.k}"
    if ctx.kept.result(name) is None:
      ll = log_px(self.options, ctx, ctx.x, name)
      logging.info("test %s ~ %.3f nats (k=%d; Monte Carlo s.e. %.4f, over images %.3f), "
                   "%.0fs, peak memory %.0f MB", self._bound_of(ctx.x), ll["log_px"],
                   self.options.k, ll["mc_stderr"], ll["data_stderr"], ll["seconds"],
                   evaluate.peak_memory_mb())
      ctx.kept.finish(name, ll)
    return {name: ctx.kept.result(name), "test_examples": labels.num_rows(ctx.x),
            "bound_of": self._bound_of(ctx.x)}

  def _bound_of(self, x) -> str:
    return "log p(x)" if self.config.builds("semi_supervised") else labels.bound_of(x)

  def headline(self, result: dict) -> dict:
    return {name: value["log_px"] for name, value in result.items()
            if name.startswith("log_px_k")}

  def during_training(self):
    """test_log_px_k{k} of the test set, k = the run's iwae_samples."""
    k, batch = self.config.iwae_samples, self.config.eval_batch_size

    def fn(model, params, x, key):
      parts_fn, x = scored(self.config, model, x)
      ll = evaluate.marginal_log_likelihood(parts_fn, params, x, key, num_samples=k,
                                            batch_size=batch, progress=False)
      return {f"test_log_px_k{k}": ll["log_px"]}
    return fn
