"""Timed epochs shared by the benchmarks: ours, built from any `RunConfig` as the
runner builds it, and a hand-written plain-JAX one of the PyTorch example's model
(no vae_jax code: the overhead guard). No flags here: the entry points have them.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import config as config_lib
from vae_jax import recipe as recipe_lib
from vae_jax import train


def random_images(n: int, image_shape=(28, 28, 1)) -> np.ndarray:
  """`[n, *image_shape]` uint8 binary images, MNIST's share of ink (13%): speed does
  not depend on the pixel values."""
  rng = np.random.default_rng(0)
  return (rng.random((n, *image_shape)) < 0.13).astype(np.uint8) * 255


def config_epoch(config: config_lib.RunConfig, images) -> callable:
  """A run() callable: one epoch of `config` on `images` `[n, H, W, C]` (uint8), built
  by `config.build` and compiled as the runner compiles it (a scan, or the host loop
  a conv model takes on a CPU; `config.seeds` replicas vmapped), the next epoch's
  batches gathered while it runs, as
  the runner gathers them; returns the epoch's metrics."""
  recipe = recipe_lib.build(config, images.shape[1:], images.shape[0])
  root = recipe.root  # `[seeds]` replicas' roots where config.seeds > 1
  epoch_fn = train.make_train_epoch(recipe.loss, recipe.optimizer, transform=recipe.transform,
                                    host_loop=recipe.host_loop, replicas=root.ndim > 0)
  box = {"state": recipe_lib.initial_state(recipe.model, recipe.optimizer, root), "epoch": 0,
         "batches": train.epoch_batches(images, root, 0, config.batch_size)}

  def run():
    box["state"], m = epoch_fn(box["state"], box["batches"], root, recipe.hparams)
    box["epoch"] += 1
    # As the runner does: the next epoch's batches are gathered while this one runs.
    box["batches"] = train.epoch_batches(images, root, box["epoch"], config.batch_size)
    return m
  run.state = lambda: box["state"]
  run.model = recipe.model
  return run


def plain_jax_epoch(images, batch_size: int) -> callable:
  """A run() callable: one epoch of the PyTorch example's model (784-400-20, relu,
  Adam 1e-3, L = 1, dynamic binarization) as a hand-written `lax.scan`: what our
  epoch is measured against."""
  sizes = {"fc1": (784, 400), "fc21": (400, 20), "fc22": (400, 20), "fc3": (20, 400),
           "fc4": (400, 784)}
  keys = jax.random.split(jax.random.key(0), len(sizes))
  params = {name: {"w": jax.random.normal(k, shape) / np.sqrt(shape[0]),
                   "b": jnp.zeros(shape[1])} for k, (name, shape) in zip(keys, sizes.items())}
  opt = optax.adam(1e-3)

  def loss(p, x, key):
    dense = lambda name, h: h @ p[name]["w"] + p[name]["b"]
    h = jax.nn.relu(dense("fc1", x))
    mu, logvar = dense("fc21", h), dense("fc22", h)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    logits = dense("fc4", jax.nn.relu(dense("fc3", z)))
    # Bernoulli log-likelihood from logits; max(l, 0) + log1p(exp(-|l|)) is softplus.
    nll = jnp.sum(jnp.maximum(logits, 0) - x * logits + jnp.log1p(jnp.exp(-jnp.abs(logits))), -1)
    kl = -0.5 * jnp.sum(1 + logvar - mu ** 2 - jnp.exp(logvar), -1)
    return jnp.mean(nll + kl)

  @jax.jit
  def epoch(p, opt_state, images, key):
    steps = images.shape[0] // batch_size
    order = jax.random.permutation(key, images.shape[0])[:steps * batch_size]
    batches = images[order].reshape(steps, batch_size, -1)

    def step(carry, args):
      p, opt_state = carry
      batch, i = args
      k_data, k_z = jax.random.split(jax.random.fold_in(key, i))
      x = jax.random.bernoulli(k_data, batch.astype(jnp.float32) / 255.0).astype(jnp.float32)
      value, grads = jax.value_and_grad(loss)(p, x, k_z)
      updates, opt_state = opt.update(grads, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state), value

    (p, opt_state), values = jax.lax.scan(step, (p, opt_state), (batches, jnp.arange(steps)))
    return p, opt_state, jnp.mean(values)

  box = {"p": params, "opt": opt.init(params), "epoch": 0}

  def run():
    box["p"], box["opt"], value = epoch(box["p"], box["opt"], images,
                                        jax.random.fold_in(jax.random.key(1), box["epoch"]))
    box["epoch"] += 1
    return value
  return run


def interleaved(runs: dict, repeats: int) -> dict:
  """{name: (first call's seconds, median seconds of `repeats` further calls)}, the
  calls of the different runs interleaved round by round so that drift in the
  machine's speed falls on all of them alike. The first call compiles."""
  times = {name: [] for name in runs}
  for _ in range(repeats + 1):
    for name, run in runs.items():
      t = time.perf_counter()
      jax.block_until_ready(run())
      times[name].append(time.perf_counter() - t)
  return {name: (ts[0], float(np.median(ts[1:]))) for name, ts in times.items()}
