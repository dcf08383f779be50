"""The evidence lower bound and the importance-weighted bound, over any encoder and decoder.

The core is plain callables, so any model fits: a linen or NNX module, a conv
net, functions of a params dict.

  encoder(x) -> a posterior q(z|x)      (e.g. `DiagonalGaussian(mean, logvar)`)
  decoder(z) -> a likelihood p(x|z)     (e.g. `Bernoulli(logits)`), with log_prob(x)
  prior                                 (default `StandardNormal()`), with log_prob(z)

Parameters are closed over by the caller, so `jax.grad`, `jax.jit`, `jax.vmap`
and `nnx.grad` all compose:

  loss = lambda p: -elbo(lambda x: enc(p, x), lambda z: dec(p, z), x, key).mean()

Every objective returns one value per example, `[batch]`, and leaves the
reduction to the caller. Sample l of z always comes from the key
`jax.random.fold_in(key, l)` (`sample_keys`), so `elbo`, `log_weights` and
`iwae_bound` see the same z for the same key, chunking changes nothing, and a
chunk's keys are made on their own (memory never grows with the number of samples).
"""

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions

ESTIMATORS = ("analytic", "monte_carlo")


class Parts(NamedTuple):
  """A VAE as its three callables/objects: what a model adapter hands the objectives."""
  encoder: Callable[[jax.Array], Any]
  decoder: Callable[[jax.Array], Any]
  prior: Any = None


class ElboTerms(NamedTuple):
  """An ELBO estimate and its parts, each `[batch]`, in nats: elbo = reconstruction - kl.

  reconstruction: the Monte Carlo mean of log p(x|z_l).
  kl: KL(q(z|x) || p(z)), in closed form ("analytic") or the Monte Carlo mean
    of log q(z_l|x) - log p(z_l) ("monte_carlo").
  """
  elbo: jax.Array
  reconstruction: jax.Array
  kl: jax.Array


class NotADistribution(TypeError):
  """An encoder or decoder returned something other than a distribution object."""


def _kind(obj) -> str:
  if isinstance(obj, (tuple, list)):
    return f"a {type(obj).__name__} of {len(obj)}"
  if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # an array, or a tracer of one
    return f"an array of shape {tuple(obj.shape)}"
  return f"a {type(obj).__module__}.{type(obj).__name__}"


def posterior_of(encoder, x):
  """encoder(x), checked to be a posterior (`sample`, `log_prob`): one line otherwise."""
  q = encoder(x)
  if not (callable(getattr(q, "sample", None)) and callable(getattr(q, "log_prob", None))):
    raise NotADistribution(
        f"the encoder returned {_kind(q)}, not a posterior: return an object with sample(key) "
        f"and log_prob(z), e.g. vae_jax.distributions.DiagonalGaussian(mean, logvar) for a "
        f"(mean, logvar) pair")
  return q


def likelihood_of(decoder, z):
  """decoder(z), checked to be a likelihood (`log_prob`): one line otherwise."""
  p = decoder(z)
  if not callable(getattr(p, "log_prob", None)):
    raise NotADistribution(
        f"the decoder returned {_kind(p)}, not a likelihood: return an object with "
        f"log_prob(x), e.g. vae_jax.distributions.Bernoulli(logits) for logits")
  return p


def check(num_samples: int, estimator: str = "analytic") -> None:
  """Raises ValueError for a sample count below 1 or an unknown estimator."""
  if int(num_samples) < 1:
    raise ValueError(f"num_samples={num_samples}: need at least one sample of z")
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator={estimator!r}: expected one of {list(ESTIMATORS)}")


def sample_keys(key: jax.Array, start, num: int) -> jax.Array:
  """The keys of samples start, ..., start + num - 1: `fold_in(key, i)`, `[num]`.

  `start` may be traced (a chunk index under `lax.map`); `num` is static.
  """
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(num))


def _prior(prior):
  return distributions.StandardNormal() if prior is None else prior


def _per_sample(fn, keys):
  """fn(key) for each of the L keys, stacked `[L, ...]`.

  Written for one sample and vmapped, so the decoder runs as one
  [L * batch]-row matmul per layer. One sample runs unbatched: the same
  numbers, but a unit vmap axis costs XLA's CPU backend about 15% of a step.
  """
  if keys.shape[0] == 1:
    return jax.tree_util.tree_map(lambda a: a[None], fn(keys[0]))
  return jax.vmap(fn)(keys)


def _sample_terms(decoder, prior, x, posterior, keys):
  """log p(x|z_l) and log q(z_l|x) - log p(z_l) for z_l drawn with keys[l]: `[L, batch]` each."""
  def one(k):
    z, log_q = distributions.sample_and_log_prob(posterior, k)
    return likelihood_of(decoder, z).log_prob(x), log_q - prior.log_prob(z)
  return _per_sample(one, keys)


def elbo_terms(encoder, decoder, x, key, *, prior=None, num_samples: int = 1,
               estimator: str = "analytic") -> ElboTerms:
  """The ELBO estimate with its reconstruction and KL parts; see `elbo`."""
  check(num_samples, estimator)
  prior = _prior(prior)
  posterior = posterior_of(encoder, x)
  # Under jit the unused Monte Carlo KL of the analytic estimator is dead code.
  ll, kl_mc = _sample_terms(decoder, prior, x, posterior, sample_keys(key, 0, num_samples))
  recon = jnp.mean(ll, axis=0)
  if estimator == "analytic":
    kl = distributions.kl_divergence(posterior, prior)
  else:
    kl = jnp.mean(kl_mc, axis=0)
  return ElboTerms(recon - kl, recon, kl)


def elbo(encoder, decoder, x, key, *, prior=None, num_samples: int = 1,
         estimator: str = "analytic") -> jax.Array:
  """The evidence lower bound of each example, estimated with L samples of z.

  estimator="analytic" (B in Kingma & Welling, 2014, eq. 7; the default):
    1/L sum_l log p(x|z_l) - KL(q(z|x) || p(z)), the KL in closed form (the
    pair must have one: see `distributions.kl_divergence`).
  estimator="monte_carlo" (A, eq. 6):
    1/L sum_l [log p(x, z_l) - log q(z_l|x)], for any posterior and prior.
  Both are unbiased for the same bound; B has the lower variance. z_l is
  reparameterized, so `jax.grad` of the mean is the reparameterization gradient.

  Args:
    encoder: x -> posterior q(z|x) (`sample(key)`, `log_prob(z)`).
    decoder: z -> likelihood p(x|z) (`log_prob(x) -> [batch]`).
    x: `[batch, ...]`, what the encoder and the likelihood take.
    key: a `jax.random` key; sample l uses `fold_in(key, l)`.
    prior: p(z), default `StandardNormal()`.
    num_samples: L >= 1 (static under `jit`).
    estimator: "analytic" or "monte_carlo" (static under `jit`).

  Returns:
    `[batch]`, in nats; average or sum it yourself.

  Example:
    >>> vae = model.bind(params)
    >>> loss = -elbo(vae.encode, vae.decode, x, key, num_samples=5).mean()
  """
  return elbo_terms(encoder, decoder, x, key, prior=prior, num_samples=num_samples,
                    estimator=estimator).elbo


def log_weights(encoder, decoder, x, key, *, prior=None, num_samples: int) -> jax.Array:
  """log p(x, z_i) - log q(z_i|x) for z_i ~ q(z|x), i = 1..k: `[num_samples, batch]`."""
  check(num_samples)
  ll, log_q_over_p = _sample_terms(decoder, _prior(prior), x, posterior_of(encoder, x),
                                   sample_keys(key, 0, num_samples))
  return ll - log_q_over_p


def iwae_bound(encoder, decoder, x, key, *, prior=None, num_samples: int,
               chunk_size: int | None = None) -> jax.Array:
  """The importance-weighted bound log 1/k sum_i p(x, z_i) / q(z_i|x), `[batch]`.

  A lower bound on log p(x) that rises with k (Burda et al., 2016, Theorem 1);
  k = 1 is the ELBO (estimator A, same key, same value); k = 5000 is the usual
  test log-likelihood estimate. The k samples run in chunks of `chunk_size`
  under `lax.map`, combined by log-sum-exp: memory O(chunk_size * batch), and
  the value, up to float rounding, does not depend on the chunk size.

  Args:
    encoder, decoder, x, key, prior: as for `elbo`.
    num_samples: k >= 1 (static under `jit`).
    chunk_size: samples evaluated at once, default min(k, 100) (static).

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  """
  return _iwae(encoder, decoder, x, key, _prior(prior), num_samples, chunk_size)[0]


def iwae_bound_and_stderr(encoder, decoder, x, key, *, prior=None, num_samples: int,
                          chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """`iwae_bound` and a Monte Carlo standard error of each value, by batch means.

  The k samples fall into G = min(STDERR_GROUPS, k) interleaved groups (sample i
  in group i mod G); each group gives its own bound from its k / G samples, and
  the standard error is sd(group bounds) / sqrt(G). That assumes the variance
  falls as 1/k, which holds for well-matched posteriors; with the heavy-tailed
  weights of a trained model it falls slower and this is too small (as is the
  delta method, sd(w) / (sqrt(k) mean(w))). For a data set,
  `evaluate.marginal_log_likelihood` fits the rate instead (calibrated). NaN
  for k = 1: one sample says nothing about its own spread.
  """
  bound, groups = _iwae(encoder, decoder, x, key, _prior(prior), num_samples, chunk_size)
  if groups.shape[0] < 2:
    return bound, jnp.full_like(bound, jnp.nan)
  return bound, jnp.std(groups, axis=0, ddof=1) / math.sqrt(groups.shape[0])


def iwae_bound_and_groups(encoder, decoder, x, key, *, prior=None, num_samples: int,
                          chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """`iwae_bound` `[batch]` and the bounds of its G = min(STDERR_GROUPS, k) interleaved
  groups of samples (sample i in group i mod G), `[G, batch]`: what error bars
  are made of."""
  return _iwae(encoder, decoder, x, key, _prior(prior), num_samples, chunk_size)


STDERR_GROUPS = 10


def _chunking(num_samples, chunk_size) -> tuple[int, int]:
  """(k, the chunk size) checked: k samples are evaluated `chunk` at a time."""
  k = int(num_samples)
  check(k)
  chunk = min(k, 100) if chunk_size is None else min(int(chunk_size), k)
  if chunk < 1:
    raise ValueError(f"chunk_size={chunk_size}: need at least 1")
  if k >= 2 ** 31:
    raise ValueError(f"num_samples={k}: at most 2**31 - 1 (sample indices are int32)")
  return k, chunk


def _iwae(encoder, decoder, x, key, prior, num_samples, chunk_size):
  k, chunk = _chunking(num_samples, chunk_size)
  lse, lse_groups = _log_sums(posterior_of(encoder, x), decoder, x, key, prior, k, chunk, 0, -(-k // chunk))
  groups = lse_groups.shape[0]
  bound = lse - math.log(k)
  sizes = jnp.asarray([len(range(g, k, groups)) for g in range(groups)], jnp.float32)
  return bound, lse_groups - jnp.log(sizes)[:, None]  # [G, batch]


def iwae_log_sums(encoder, decoder, x, key, *, prior=None, num_samples: int,
                  chunk_size: int, first_chunk, num_chunks: int
                  ) -> tuple[jax.Array, jax.Array]:
  """Part of the k-sample bound: log sum_i w_i over the samples of chunks
  first_chunk, ..., first_chunk + num_chunks - 1 (chunk c holds samples
  c * chunk_size ... up to k - 1), `[batch]`, and over each of the G interleaved
  groups' share of them, `[G, batch]`. `first_chunk` may be traced.

  Added up in log space over chunk ranges that partition the k samples, these
  give `iwae_bound_and_groups` (times k, times the group sizes): a long
  evaluation cut into short calls (`evaluate.marginal_log_likelihood`).
  """
  k, chunk = _chunking(num_samples, chunk_size)
  return _log_sums(posterior_of(encoder, x), decoder, x, key, _prior(prior), k, chunk, first_chunk,
                   num_chunks)


def _log_sums(posterior, decoder, x, key, prior, k, chunk, first_chunk, num_chunks):
  groups = min(STDERR_GROUPS, k)

  def chunk_stats(c):
    # This chunk's keys alone: memory O(chunk), whatever k is.
    index = c * chunk + jnp.arange(chunk)
    ll, log_q_over_p = _sample_terms(decoder, prior, x, posterior,
                                     sample_keys(key, c * chunk, chunk))
    logw = jnp.where((index < k)[:, None], ll - log_q_over_p, -jnp.inf)  # padding: weight 0
    # log sum w over the chunk, and over each group's share of it: [batch], [G, batch].
    in_group = (index % groups)[:, None] == jnp.arange(groups)  # [chunk, G]
    by_group = jnp.where(in_group[:, :, None], logw[:, None, :], -jnp.inf)
    return jax.nn.logsumexp(logw, axis=0), jax.nn.logsumexp(by_group, axis=0)

  # Running log-sum-exps carried over the chunks: nothing grows with k.
  def add_chunk(c, carry):
    lse, lse_groups = chunk_stats(c)
    return jnp.logaddexp(carry[0], lse), jnp.logaddexp(carry[1], lse_groups)

  return jax.lax.fori_loop(first_chunk + 1, first_chunk + num_chunks, add_chunk,
                           chunk_stats(first_chunk))


def iwae_surrogate(encoder, decoder, x, key, *, prior=None, num_samples: int,
                   gradient: str = "standard") -> jax.Array:
  """The k-sample IWAE bound as a training objective, `[batch]`.

  Its value is `iwae_bound` (same key, same value); its gradient is
  gradient="standard": sum_i w~_i grad log w_i, the reparameterized gradient
    of the bound (Burda et al., 2016), whose encoder part grows noisier
    relative to its size as k grows;
  gradient="dreg": the doubly reparameterized estimator (Tucker et al., 2019):
    for the encoder sum_i w~_i^2 d log w_i / d z_i dz_i/dphi, with q's
    parameters held fixed inside log q; for the decoder and the prior the
    standard sum_i w~_i grad log p(x, z_i). Unbiased for the same gradient,
    with a variance that does not blow up with k.
  w~_i = w_i / sum_j w_j are the normalized importance weights.

  The DReG parts are written without knowing which parameters belong to the
  encoder: the decoder-side terms are evaluated at stop_gradient(z_i) and the
  decoder's share of the reparameterized term is subtracted back out.

  DReG needs q's density at its draws, differentiable in z, with q's parameters held
  fixed (`stop_gradient` over the posterior object): diagonal Gaussians and
  `flows.IAF` (from the base draw, with the inverse's derivatives:
  `distributions.log_prob_of_draw`) have it; a planar flow has not and raises
  NotImplementedError.
  """
  check(num_samples)
  if gradient not in ("standard", "dreg"):
    raise ValueError(f"gradient={gradient!r}: expected 'standard' or 'dreg'")
  prior = _prior(prior)
  posterior = posterior_of(encoder, x)
  keys = sample_keys(key, 0, num_samples)
  if gradient == "standard":
    ll, log_q_over_p = _sample_terms(decoder, prior, x, posterior, keys)
    return jax.nn.logsumexp(ll - log_q_over_p, axis=0) - math.log(num_samples)
  fixed_q = jax.tree_util.tree_map(jax.lax.stop_gradient, posterior)

  def one(k):
    z = posterior.sample(k)
    z_fixed = jax.lax.stop_gradient(z)
    log_p_at_fixed = decoder(z_fixed).log_prob(x) + prior.log_prob(z_fixed)
    logw = (decoder(z).log_prob(x) + prior.log_prob(z)
            - distributions.log_prob_of_draw(fixed_q, z, k))
    return logw, log_p_at_fixed
  logw, log_p_at_fixed = _per_sample(one, keys)
  w = jax.lax.stop_gradient(jax.nn.softmax(logw, axis=0))  # normalized weights [k, batch]
  value = jax.lax.stop_gradient(jax.nn.logsumexp(logw, axis=0) - math.log(num_samples))
  surrogate = jnp.sum(jnp.square(w) * logw + (w - jnp.square(w)) * log_p_at_fixed, axis=0)
  return value + surrogate - jax.lax.stop_gradient(surrogate)
