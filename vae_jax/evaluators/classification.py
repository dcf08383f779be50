"""A semi-supervised model's figures (`semisupervised`): the test error of its classifier
q(y|x), the share of test images whose most likely class is not their label, and the
test bound on log p(x) with the label marginalised under q(y|x)."""

import logging

from vae_jax import labels
from vae_jax import semisupervised
from vae_jax.evaluators import base


def _figures(model, params, rows, key) -> dict:
  rows = labels.as_batch(rows)
  if rows.labels is None or not callable(getattr(model, "classify", None)):
    raise ValueError("method=classification: needs a model with a classifier (--model=m2) "
                     "and labelled test images")
  return {"test_error": semisupervised.classification_error(model, params, rows.x, rows.labels),
          "test_bound_unlabelled": semisupervised.mean_unlabelled_bound(model, params, rows.x,
                                                                        key)}


class Evaluator(base.Method):
  """The test error of q(y|x); during training too (cheap: one pass of the classifier)."""

  trains_along = True

  def run(self, ctx) -> dict:
    figures = _figures(ctx.model, ctx.params, ctx.x, ctx.key)
    logging.info("test error: %.2f%% of %d test images; their bound on log p(x), the label "
                 "marginalised: %.3f nats", 100 * figures["test_error"], labels.num_rows(ctx.x),
                 figures["test_bound_unlabelled"])
    return {"classification": {**figures, "test_examples": labels.num_rows(ctx.x)}}

  def headline(self, result: dict) -> dict:
    return {k: v for k, v in result["classification"].items() if k != "test_examples"}

  def during_training(self):
    """test_error and test_bound_unlabelled of the test set."""
    return lambda model, params, x, key: _figures(model, params, x, key)
