"""The test error of a semi-supervised model's classifier q(y|x) (`semisupervised`):
the share of test images whose most likely class is not their label."""

import logging

from vae_jax import labels
from vae_jax import semisupervised
from vae_jax.evaluators import base


def _error(model, params, rows) -> float:
  rows = labels.as_batch(rows)
  if rows.labels is None or not callable(getattr(model, "classify", None)):
    raise ValueError("method=classification: needs a model with a classifier (--model=m2) "
                     "and labelled test images")
  return semisupervised.classification_error(model, params, rows.x, rows.labels)


class Evaluator(base.Method):
  """The test error of q(y|x); during training too (cheap: one pass of the classifier)."""

  trains_along = True

  def run(self, ctx) -> dict:
    error = _error(ctx.model, ctx.params, ctx.x)
    logging.info("test error: %.2f%% of %d test images", 100 * error, labels.num_rows(ctx.x))
    return {"classification": {"test_error": error, "test_examples": labels.num_rows(ctx.x)}}

  def headline(self, result: dict) -> dict:
    return {"test_error": result["classification"]["test_error"]}

  def during_training(self):
    """test_error of the test set."""
    return lambda model, params, x, key: {"test_error": _error(model, params, x)}
