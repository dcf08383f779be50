"""Small models with known answers, shared by the tests."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import vae_jax
from vae_jax import distributions


class LinearGaussian(nn.Module):
  """p(z) = N(0, I), p(x|z) = N(W z + b, noise_var I), q(z|x) = N(A x + c, diag(exp(logvar))).

  p(x) = N(b, W W^T + noise_var I) and p(z|x) are known in closed form; with
  W^T W diagonal the exact posterior is diagonal, so the encoder can equal it.
  """
  input_dim: int
  latent_dim: int

  def setup(self):
    d, z = self.input_dim, self.latent_dim
    self.W = self.param("W", nn.initializers.normal(), (d, z))
    self.b = self.param("b", nn.initializers.normal(), (d,))
    self.noise_logvar = self.param("noise_logvar", nn.initializers.zeros, ())
    self.A = self.param("A", nn.initializers.normal(), (d, z))
    self.c = self.param("c", nn.initializers.zeros, (z,))
    self.logvar = self.param("logvar", nn.initializers.zeros, (z,))

  def encode(self, x):
    mean = x @ self.A + self.c
    return mean, jnp.broadcast_to(self.logvar, mean.shape)

  def log_likelihood(self, x, z):
    return distributions.gaussian_log_prob(x, z @ self.W.T + self.b, self.noise_logvar)


def linear_gaussian_problem(input_dim=6, latent_dim=3, n=200, seed=0):
  """A LinearGaussian with orthogonal W columns, its exact-posterior params,
  data drawn from it and the exact log p(x) (float64), as
  (model, exact_params, x, log_px)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(input_dim, latent_dim)))
  W = q * np.array([2.0, 1.0, 0.5][:latent_dim] + [1.0] * max(0, latent_dim - 3))
  b = rng.normal(size=input_dim)
  noise_var = 0.3
  # Posterior: S = (I + W^T W / s2)^-1 (diagonal here), mean = S W^T (x - b) / s2.
  S = np.linalg.inv(np.eye(latent_dim) + W.T @ W / noise_var)
  A = (S @ W.T / noise_var).T
  z = rng.normal(size=(n, latent_dim))
  x = z @ W.T + b + np.sqrt(noise_var) * rng.normal(size=(n, input_dim))
  log_px = stats.multivariate_normal(b, W @ W.T + noise_var * np.eye(input_dim)).logpdf(x)
  params = {"params": {
      "W": W, "b": b, "noise_logvar": np.log(noise_var), "A": A, "c": -b @ A,
      "logvar": np.log(np.diag(S))}}
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
  model = LinearGaussian(input_dim, latent_dim)
  return model, params, jnp.asarray(x, jnp.float32), log_px


def worse_encoder(params, shift=0.5, logvar_shift=0.7):
  """The same model with an encoder that is off the exact posterior."""
  p = jax.tree_util.tree_map(lambda a: a, params)
  p["params"] = dict(p["params"])
  p["params"]["c"] = p["params"]["c"] + shift
  p["params"]["logvar"] = p["params"]["logvar"] + logvar_shift
  return p


def small_vae(input_dim, latent_dim, hidden, n):
  """A tanh VAE with parameters from key 0 and n binary rows (p = 0.4) from key 1,
  as (model, params, x)."""
  model = vae_jax.VAE(input_dim=input_dim, latent_dim=latent_dim, hidden_sizes=(hidden,),
                      activation="tanh")
  params = vae_jax.init_params(model, jax.random.key(0))
  return model, params, binary_data(jax.random.key(1), n=n, dim=input_dim, p=0.4)


def binary_data(key, n=16, dim=784, p=0.2):
  return (jax.random.uniform(key, (n, dim)) < p).astype(jnp.float32)


TIMING = ("examples_per_s", "epoch_s")


def run_metrics(workdir):
  """A run's metrics.jsonl records without the timing fields (which vary run to run)."""
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in lines]
