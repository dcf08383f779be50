"""Training losses for `train.make_train_step`: `loss_fn(params, x, key, step) -> (loss, metrics)`.

A loss is any function of that shape; one that takes hyperparameters as keyword
arguments (`elbo_loss`'s `beta` and `kl_warmup_steps`) gets them from the train step's
`hparams` as traced values, so a sweep over them compiles one program. These build the usual ones from a
`parts_fn(params) -> Parts(encoder, decoder, prior)` (for the project's models,
`model.parts`); for a conditional model x is a `labels.Batch(x, labels)` and
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


def kl_weight(step, warmup_steps):
  """The KL warm-up's weight at `step`: rising linearly from 0 at step 0 to 1 at
  `warmup_steps`, then 1; `warmup_steps` <= 0 gives 1 throughout (`kl_warmup` as a
  traced function of both, float32 [])."""
  step = jnp.asarray(step, jnp.float32)
  steps = jnp.asarray(warmup_steps, jnp.float32)
  return jnp.where(steps > 0, jnp.clip(step / jnp.maximum(steps, 1.0), 0.0, 1.0), 1.0)


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
    loss_fn(params, x, key, step, *, beta=None, kl_warmup_steps=0) -> (loss,
    {"objective", "elbo", "reconstruction", "kl", "beta"}); "elbo" is always the
    unweighted bound. Given `beta` (traced, e.g. from the train step's hparams) the KL
    weight is beta * `kl_weight(step, kl_warmup_steps)` in place of the argument's.
  """
  objectives.check(num_samples, estimator)
  beta_fn = beta if callable(beta) else (lambda step: beta)

  def loss_fn(params, x, key, step, *, beta=None, kl_warmup_steps=0):
    (enc, dec, prior), x = labels.bind(parts_fn, params, x)
    terms = objectives.elbo_terms(enc, dec, x, key, prior=prior, num_samples=num_samples,
                                  estimator=estimator)
    weight = beta_fn(step) if beta is None else beta * kl_weight(step, kl_warmup_steps)
    b = jnp.asarray(weight, terms.kl.dtype)
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
