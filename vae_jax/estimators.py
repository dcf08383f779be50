"""Gradient estimators of the ELBO: reparameterization and score function.

`objectives.elbo` is the reparameterization surrogate: z = mean + sigma * eps
carries the gradient into the encoder. `score_function_surrogate` is the
REINFORCE alternative that Kingma & Welling (2014, Section 2.2) set it against:
its value is the same ELBO estimate, but z is held fixed and the encoder's
gradient comes from f(z) * grad log q(z|x) instead, an unbiased estimator with
a much larger variance.
"""

import jax
import jax.numpy as jnp

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
    log_q = posterior.log_prob(z)
    f = ll if estimator == "analytic" else ll + prior.log_prob(z) - log_q
    score_term = jax.lax.stop_gradient(f) * (log_q - jax.lax.stop_gradient(log_q))
    return f + score_term

  value = jnp.mean(jax.vmap(one)(objectives.sample_keys(key, 0, num_samples)), axis=0)
  if estimator == "analytic":
    value = value - distributions.kl_divergence(posterior, prior)
  return value
