"""The evidence lower bound and the importance-weighted bound, per example.

Every objective here is a pure function of (model, params, x, key) that returns
one value per example, `[batch]`, and leaves the reduction to the caller. The
model is a `vae_jax.models.VAE` (or any linen module with the same `encode` and
`log_likelihood` methods); it is hashable, so `jax.jit` takes it as a static
argument:

  bound = jax.jit(elbo, static_argnums=0, static_argnames="num_samples")
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions

ESTIMATORS = ("analytic", "monte_carlo")


class ElboTerms(NamedTuple):
  """The parts of an ELBO estimate, each `[batch]`, in nats.

  elbo = log_likelihood - kl, where log_likelihood is the Monte Carlo mean of
  log p(x|z_l) and kl is KL(q(z|x) || p(z)): in closed form for the "analytic"
  estimator, the Monte Carlo mean of log q(z_l|x) - log p(z_l) for
  "monte_carlo".
  """
  elbo: jax.Array
  log_likelihood: jax.Array
  kl: jax.Array


def _check(num_samples: int, estimator: str) -> None:
  if int(num_samples) < 1:
    raise ValueError(f"num_samples={num_samples}: need at least one sample of z")
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator={estimator!r}: expected one of {list(ESTIMATORS)}")


def log_weights(model, params, x, key, *, num_samples: int) -> jax.Array:
  """log p(x, z_i) - log q(z_i|x) for z_i ~ q(z|x), i = 1..num_samples.

  Sample i uses `jax.random.split(key, num_samples)[i]`, as `elbo` and
  `iwae_bound` do, so all three see the same z for the same key.

  Args:
    model: the VAE module.
    params: its parameters.
    x: `[batch, D]`.
    key: a `jax.random` key.
    num_samples: k.

  Returns:
    `[num_samples, batch]`.
  """
  mean, logvar = model.apply(params, x, method=model.encode)
  return _log_weights_from_keys(model, params, x, mean, logvar,
                                jax.random.split(key, num_samples))


def _sample_terms(model, params, x, mean, logvar, keys):
  """For z_l ~ q(z|x) drawn with keys[l]: log p(x|z_l) and log q(z_l|x) - log p(z_l).

  Written for one sample of z and vmapped over the L keys, so the decoder runs
  as one [L * batch]-row matmul per layer. Returns two `[L, batch]` arrays.
  """
  def one(k):
    z = distributions.gaussian_sample(k, mean, logvar)
    ll = model.apply(params, x, z, method=model.log_likelihood)
    return ll, (distributions.gaussian_log_prob(z, mean, logvar)
                - distributions.standard_normal_log_prob(z))
  if keys.shape[0] == 1:
    # The same numbers as the vmap; a unit sample axis costs XLA's CPU backend
    # about 15% of a training step in copies, so one sample runs unbatched.
    return jax.tree_util.tree_map(lambda a: a[None], one(keys[0]))
  return jax.vmap(one)(keys)


def _log_weights_from_keys(model, params, x, mean, logvar, keys):
  ll, log_q_over_p = _sample_terms(model, params, x, mean, logvar, keys)
  return ll - log_q_over_p


def elbo_terms(model, params, x, key, *, num_samples: int = 1,
               estimator: str = "analytic") -> ElboTerms:
  """The ELBO estimate with its reconstruction and KL parts; see `elbo`."""
  _check(num_samples, estimator)
  mean, logvar = model.apply(params, x, method=model.encode)

  # Under jit the unused Monte Carlo KL of the analytic estimator is dead code.
  ll, kl_mc = _sample_terms(model, params, x, mean, logvar,
                            jax.random.split(key, num_samples))
  ll = jnp.mean(ll, axis=0)
  if estimator == "analytic":
    kl = distributions.kl_standard_normal(mean, logvar)
  else:
    kl = jnp.mean(kl_mc, axis=0)
  return ElboTerms(ll - kl, ll, kl)


def elbo(model, params, x, key, *, num_samples: int = 1,
         estimator: str = "analytic") -> jax.Array:
  """The evidence lower bound of each example, estimated with L samples of z.

  estimator="analytic" (B in Kingma & Welling, 2014, eq. 7; the default):
    1/L sum_l log p(x|z_l) - KL(q(z|x) || p(z)), the KL in closed form.
  estimator="monte_carlo" (A, eq. 6):
    1/L sum_l [log p(x, z_l) - log q(z_l|x)].
  Both are unbiased for the same bound; B has the lower variance. z_l = mean +
  sigma * eps_l is reparameterized, so `jax.grad` of the mean gives the
  reparameterization gradient.

  Args:
    model: a `VAE` (hashable: a static argument under `jax.jit`).
    params: its parameters.
    x: `[batch, D]`.
    key: a `jax.random` key; sample l uses `jax.random.split(key, L)[l]`.
    num_samples: L >= 1 (static under `jit`).
    estimator: "analytic" or "monte_carlo" (static under `jit`).

  Returns:
    `[batch]`, in nats; average or sum it yourself.

  Example:
    >>> model = vae_jax.pytorch_example()
    >>> params = vae_jax.init_params(model, jax.random.key(0))
    >>> loss = -vae_jax.elbo(model, params, x, key, num_samples=5).mean()
  """
  return elbo_terms(model, params, x, key, num_samples=num_samples, estimator=estimator).elbo


def iwae_bound(model, params, x, key, *, num_samples: int,
               chunk_size: int | None = None) -> jax.Array:
  """The importance-weighted bound log 1/k sum_i p(x, z_i) / q(z_i|x).

  With k = num_samples it is a lower bound on log p(x) that rises with k (Burda
  et al., 2016, Theorem 1); k = 1 is the ELBO (estimator A, same key, same
  value); k = 5000 is the usual test log-likelihood estimate. The k samples are
  evaluated in chunks of `chunk_size` under `lax.map` and combined with a
  log-sum-exp, so memory is O(chunk_size * batch) and the value, up to float
  rounding, does not depend on the chunk size: sample i always uses
  `jax.random.split(key, k)[i]`.

  Args:
    model: a `VAE`.
    params: its parameters.
    x: `[batch, D]`.
    key: a `jax.random` key.
    num_samples: k >= 1 (static under `jit`).
    chunk_size: samples evaluated at once, default min(k, 100) (static).

  Returns:
    `[batch]`, in nats.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  """
  return _iwae(model, params, x, key, num_samples, chunk_size)[0]


def iwae_bound_and_stderr(model, params, x, key, *, num_samples: int,
                          chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """`iwae_bound` and the Monte Carlo standard error of each value, `[batch]` each.

  The error is the delta-method one, sd(w) / (sqrt(k) mean(w)), for the
  importance weights w_i = p(x, z_i) / q(z_i|x): how much the estimate of
  log p(x) would move with another key. Like every estimate from the sample
  variance of the weights, it is too small when q is far from the posterior
  and the weights are heavy-tailed.
  """
  return _iwae(model, params, x, key, num_samples, chunk_size)


def _iwae(model, params, x, key, num_samples, chunk_size):
  k = int(num_samples)
  _check(k, "analytic")
  chunk = min(k, 100) if chunk_size is None else min(int(chunk_size), k)
  if chunk < 1:
    raise ValueError(f"chunk_size={chunk_size}: need at least 1")
  n_chunks = -(-k // chunk)
  keys = jax.random.split(key, k)
  pad = n_chunks * chunk - k
  if pad:  # padded samples get weight zero (log weight -inf) below
    keys = jnp.concatenate([keys, keys[:pad]])
  keys = keys.reshape((n_chunks, chunk) + keys.shape[1:])
  valid = (jnp.arange(n_chunks * chunk) < k).reshape(n_chunks, chunk)
  mean, logvar = model.apply(params, x, method=model.encode)

  def chunk_stats(args):
    chunk_keys, chunk_valid = args
    logw = _log_weights_from_keys(model, params, x, mean, logvar, chunk_keys)
    logw = jnp.where(chunk_valid[:, None], logw, -jnp.inf)
    # log sum w and log sum w^2 for this chunk: [batch] each.
    return (jax.nn.logsumexp(logw, axis=0), jax.nn.logsumexp(2.0 * logw, axis=0))

  lse, lse2 = jax.lax.map(chunk_stats, (keys, valid))
  log_sum_w = jax.nn.logsumexp(lse, axis=0)
  log_sum_w2 = jax.nn.logsumexp(lse2, axis=0)
  bound = log_sum_w - math.log(k)
  # Var(w)/mean(w)^2 = k * sum w^2 / (sum w)^2 - 1, computed in log space.
  rel_var = jnp.maximum(k * jnp.exp(log_sum_w2 - 2.0 * log_sum_w) - 1.0, 0.0)
  stderr = jnp.sqrt(rel_var / k)
  return bound, stderr
