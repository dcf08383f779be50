"""Training losses for `train.make_train_step`: `loss_fn(params, x, key, step) -> (loss, metrics)`.

A loss is any function of that shape; these build the usual ones from a
`parts_fn(params) -> Parts(encoder, decoder, prior)` (for the project's models,
`model.parts`); for a conditional model x is the pair (x, labels) and
`parts_fn(params, labels)` binds them (`labels.bind`). The loss is the batch mean of the negative objective, in nats
per example; metrics are scalars (batch means), always with "objective", the
bound being maximised.
"""

from typing import Callable

import jax.numpy as jnp
import optax

from vae_jax import labels
from vae_jax import objectives

LossFn = Callable  # (params, x, key, step) -> (scalar loss, dict of scalar metrics)


def kl_warmup(steps: int) -> optax.Schedule:
  """beta rising linearly from 0 at step 0 to 1 at `steps`, then 1 (Bowman et al., 2016;
  Sonderby et al., 2016). steps = 0 gives beta = 1 throughout."""
  if steps <= 0:
    return optax.constant_schedule(1.0)
  return optax.linear_schedule(0.0, 1.0, steps)


def elbo_loss(parts_fn, *, num_samples: int = 1, estimator: str = "analytic",
              beta: float | optax.Schedule = 1.0) -> LossFn:
  """-(reconstruction - beta * KL), batch mean: the ELBO for beta = 1 (the default),
  the beta-VAE objective otherwise.

  Args:
    parts_fn: params -> `objectives.Parts`.
    num_samples: L, samples of z per data point.
    estimator: "analytic" (closed-form KL) or "monte_carlo".
    beta: the KL weight, a number or a schedule of the step (`kl_warmup`, any
      optax schedule).

  Returns:
    loss_fn(params, x, key, step) -> (loss, {"objective", "elbo", "reconstruction",
    "kl", "beta"}); "elbo" is always the unweighted bound.
  """
  objectives.check(num_samples, estimator)
  beta_fn = beta if callable(beta) else (lambda step: beta)

  def loss_fn(params, x, key, step):
    (enc, dec, prior), x = labels.bind(parts_fn, params, x)
    terms = objectives.elbo_terms(enc, dec, x, key, prior=prior, num_samples=num_samples,
                                  estimator=estimator)
    b = jnp.asarray(beta_fn(step), terms.kl.dtype)
    objective = jnp.mean(terms.reconstruction - b * terms.kl)
    return -objective, {"objective": objective, "elbo": jnp.mean(terms.elbo),
                        "reconstruction": jnp.mean(terms.reconstruction),
                        "kl": jnp.mean(terms.kl), "beta": b}
  return loss_fn


def iwae_loss(parts_fn, *, num_samples: int, gradient: str = "standard") -> LossFn:
  """-IWAE bound with k = num_samples, batch mean (Burda et al., 2016).

  Args:
    parts_fn: params -> `objectives.Parts`.
    num_samples: k.
    gradient: "standard" or "dreg" (doubly reparameterized, Tucker et al., 2019);
      see `objectives.iwae_surrogate`.

  Returns:
    loss_fn(params, x, key, step) -> (loss, {"objective", "iwae_bound"}).
  """
  objectives.check(num_samples)

  def loss_fn(params, x, key, step):
    del step
    (enc, dec, prior), x = labels.bind(parts_fn, params, x)
    bound = jnp.mean(objectives.iwae_surrogate(enc, dec, x, key, prior=prior,
                                               num_samples=num_samples, gradient=gradient))
    return -bound, {"objective": bound, "iwae_bound": bound}
  return loss_fn
