"""Evaluation over a whole data set: padded, masked batches under `lax.map`.

The data set is cut into batches of a fixed size, the last one padded and its
padding masked out of the sums, so the means are exact for any n and the
function compiles once per shape. Batch b uses `fold_in(key, b)`.
"""

import functools

import jax
import jax.numpy as jnp

from vae_jax import objectives


def _batched_means(per_example_fn, x, key, batch_size):
  """Means over the n rows of x of each `[batch]` output of per_example_fn(xb, key)."""
  n = x.shape[0]
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  xb = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_batches, batch_size, x.shape[1])
  mask = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

  def one(args):
    xs, ms, b = args
    out = per_example_fn(xs, jax.random.fold_in(key, b))
    return jax.tree_util.tree_map(lambda v: jnp.sum(jnp.where(ms, v, 0.0)), out)

  sums = jax.lax.map(one, (xb, mask, jnp.arange(num_batches)))
  return jax.tree_util.tree_map(lambda s: jnp.sum(s) / n, sums)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "estimator", "batch_size"))
def elbo_means(model, params, x, key, *, num_samples: int = 1, estimator: str = "analytic",
               batch_size: int = 1000) -> dict:
  """The ELBO and its parts averaged over a data set.

  Args:
    model, params: the VAE.
    x: `[n, D]` float32 model inputs.
    key: a `jax.random` key.
    num_samples: L.
    estimator: "analytic" or "monte_carlo".
    batch_size: rows evaluated at once.

  Returns:
    {"elbo", "log_likelihood", "kl"}: scalars, nats per example.
  """
  def fn(xb, k):
    return objectives.elbo_terms(model, params, xb, k, num_samples=num_samples,
                                 estimator=estimator)._asdict()
  return _batched_means(fn, x, key, batch_size)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "chunk_size", "batch_size"))
def iwae_means(model, params, x, key, *, num_samples: int, chunk_size: int = 100,
               batch_size: int = 100) -> dict:
  """The IWAE estimate of log p(x) averaged over a data set.

  Returns:
    {"log_px": mean of the k-sample bounds, "mc_var": mean over examples of
    each bound's Monte Carlo variance, "sq": the mean of the squared bounds},
    from which the caller forms the standard errors.
  """
  def fn(xb, k):
    bound, stderr = objectives.iwae_bound_and_stderr(model, params, xb, k,
                                                     num_samples=num_samples,
                                                     chunk_size=chunk_size)
    return {"log_px": bound, "mc_var": jnp.square(stderr), "sq": jnp.square(bound)}
  return _batched_means(fn, x, key, batch_size)


@functools.partial(jax.jit, static_argnames=("model",))
def encoder_means(model, params, x) -> jax.Array:
  """The encoder means of a data set: `[n, D]` -> `[n, Z]`."""
  return model.apply(params, x, method=model.encode)[0]
