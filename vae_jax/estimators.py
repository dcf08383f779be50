"""Gradient estimators of the ELBO: reparameterization and score function.

`objectives.elbo` is the reparameterization surrogate: z = mean + sigma * eps
carries the gradient into the encoder. `score_function_surrogate` is the
REINFORCE alternative that Kingma & Welling (2014, Section 2.2) set it against:
its value is the same ELBO estimate, but z is held fixed and the encoder's
gradient comes from f(z) * grad log q(z|x) instead, an unbiased estimator with
a much larger variance. `gradient_variance` measures both on a model.
"""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions
from vae_jax import objectives


def score_function_surrogate(encoder, decoder, x, key, *, prior=None, num_samples: int = 1,
                             estimator: str = "analytic") -> jax.Array:
  """A per-example surrogate whose value is the ELBO estimate and whose
  `jax.grad` is the score-function estimator of the ELBO's gradient.

  For each z_l ~ q(z|x), drawn with `fold_in(key, l)` as in
  `elbo`, and f the integrand (log p(x|z) for "analytic", log p(x, z) -
  log q(z|x) for "monte_carlo"), the surrogate adds
  stop_gradient(f(z_l)) * (log q(z_l|x) - stop_gradient(log q(z_l|x))),
  which is zero in value and f(z_l) * grad log q(z_l|x) in gradient. With the
  "analytic" estimator the closed-form KL keeps its exact gradient. The
  decoder's gradient is the same as the reparameterization one's.

  Args:
    encoder, decoder, x, key, prior, num_samples, estimator: as for `objectives.elbo`.

  Returns:
    `[batch]`: equal in value to `elbo(...)` with the same arguments.
  """
  objectives.check(num_samples, estimator)
  prior = distributions.StandardNormal() if prior is None else prior
  posterior = encoder(x)

  def one(k):
    z = jax.lax.stop_gradient(posterior.sample(k))
    ll = decoder(z).log_prob(x)
    log_q = distributions.log_prob_of_draw(posterior, z, k)
    f = ll if estimator == "analytic" else ll + prior.log_prob(z) - log_q
    score_term = jax.lax.stop_gradient(f) * (log_q - jax.lax.stop_gradient(log_q))
    return f + score_term

  value = jnp.mean(jax.vmap(one)(objectives.sample_keys(key, 0, num_samples)), axis=0)
  if estimator == "analytic":
    value = value - distributions.kl_divergence(posterior, prior)
  return value


# The estimators `gradient_variance` compares: each a per-example surrogate of the ELBO.
SURROGATES = {"reparameterization": objectives.elbo,
              "score_function": score_function_surrogate}


@functools.partial(jax.jit, static_argnames=("parts_fn", "surrogate", "num_samples"))
def encoder_gradient_moments(parts_fn, surrogate, params, x, keys, *, num_samples: int):
  """Sum and sum of squares, over `keys` `[R]`, of the flattened gradient of the
  batch-mean `surrogate` with respect to the encoder's parameters
  (`params["params"]["encoder"]`): two `[P]` arrays."""
  def grad(key):
    def mean_bound(p):
      enc, dec, prior = parts_fn(p)
      return surrogate(enc, dec, x, key, prior=prior, num_samples=num_samples).mean()
    g = jax.grad(mean_bound)(params)
    return jax.flatten_util.ravel_pytree(g["params"]["encoder"])[0]

  def body(acc, key):
    g = grad(key)
    return (acc[0] + g, acc[1] + g * g), None

  size = jax.flatten_util.ravel_pytree(params["params"]["encoder"])[0].size
  zeros = jnp.zeros(size, jnp.float32)
  return jax.lax.scan(body, (zeros, zeros), keys)[0]


def gradient_variance(parts_fn, params, x, key, sample_counts, repeats: int) -> list[dict]:
  """The variance of the encoder's gradient under each of `SURROGATES`, per L.

  For each L in `sample_counts`, `repeats` independent estimates (keys from
  `fold_in(key, L)`) of the gradient of the batch-mean ELBO of `x` `[batch, ...]`.

  Returns:
    One dict per L: "L", and for each estimator name, "{name}_variance" (the
    trace of the gradient's covariance, summed over parameters, unbiased) and
    "{name}_mean_sq_norm" (the squared norm of the mean gradient); and
    "variance_ratio" (score function over reparameterization).
  """
  if repeats < 2:
    raise ValueError(f"repeats={repeats}: a variance needs at least 2")
  rows = []
  for num_samples in sample_counts:
    row = {"L": int(num_samples)}
    keys = jax.random.split(jax.random.fold_in(key, num_samples), repeats)
    for name, surrogate in SURROGATES.items():
      s, s2 = (np.asarray(a, np.float64) for a in encoder_gradient_moments(
          parts_fn, surrogate, params, x, keys, num_samples=int(num_samples)))
      mean = s / repeats
      row[f"{name}_variance"] = float(((s2 - repeats * mean ** 2) / (repeats - 1)).sum())
      row[f"{name}_mean_sq_norm"] = float(np.sum(mean ** 2))
    row["variance_ratio"] = row["score_function_variance"] / row["reparameterization_variance"]
    rows.append(row)
  return rows
