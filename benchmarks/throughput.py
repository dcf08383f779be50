"""Training throughput side by side: our compiled epoch, a minimal hand-written
plain-JAX epoch of the same model (no vae_jax code: the overhead guard), our
jitted step in a Python loop, and the PyTorch example's own loop, in one
process; the fraction of the machine's matmul ceiling; the cost of L samples
against their FLOPs.

  python -m benchmarks.throughput            # about 3 minutes on 2 cores
  pip install torch==2.13.0                  # first, for the PyTorch column (CPU build)

The model is the PyTorch example's (784-400-20, relu, Adam 1e-3, L = 1) on
random binary data of MNIST's shape (60,000 x 784; speed does not depend on the
pixel values). Ours binarizes every batch on the device as in real training;
the PyTorch loop gets binary floats. Every figure is a median of --repeats
epochs after a warm-up one; compile time is reported apart. Writes
--out (JSON) and prints Markdown tables.
"""

import platform

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from benchmarks import common
from vae_jax import data
from vae_jax import losses
from vae_jax import models
from vae_jax import optimizers
from vae_jax import train

BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["20", "128", "1024"], "Batch sizes to time.")
LS = flags.DEFINE_list("Ls", ["1", "5", "10", "20"], "Samples of z for the L-scaling table.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Timed epochs per figure (median).", lower_bound=1)
NUM = flags.DEFINE_integer("num_examples", 60000, "Examples per epoch.", lower_bound=1024)
OUT = flags.DEFINE_string("out", "runs/benchmarks/throughput.json", "Where the JSON goes.")


def _images(n):
  rng = np.random.default_rng(0)
  return (rng.random((n, 784)) < 0.13).astype(np.uint8) * 255


def our_epoch(images, batch_size, num_samples=1):
  """A run() callable: one epoch of our compiled training (`train.make_train_epoch`)."""
  model = models.pytorch_example()
  opt = optimizers.make_optimizer("adam", 1e-3)
  root = jax.random.key(0)
  epoch_fn = train.make_train_epoch(losses.elbo_loss(model.parts, num_samples=num_samples), opt,
                                    transform=data.binarizer("dynamic"))
  box = {"state": train.init_state(models.init_params(model, root), opt), "epoch": 0}
  def run():
    batches = train.epoch_batches(images, root, box["epoch"], batch_size)
    box["state"], m = epoch_fn(box["state"], batches, root)
    box["epoch"] += 1
    return m
  return run


def jax_epoch(images, batch_size, num_samples=1, repeats=3):
  """(compile seconds, epoch seconds) of our compiled epoch."""
  first, t = common.median_time(our_epoch(images, batch_size, num_samples), repeats)
  return first - t, t


def plain_jax_epoch(images, batch_size):
  """A run() callable: one epoch of the same model, loss, optimizer and data as a
  hand-written `lax.scan` (no vae_jax code): what our epoch is measured against."""
  import optax  # pylint: disable=g-import-not-at-top
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
  machine's speed falls on all of them alike."""
  import time  # pylint: disable=g-import-not-at-top
  times = {name: [] for name in runs}
  for r in range(repeats + 1):
    for name, run in runs.items():
      t = time.perf_counter()
      jax.block_until_ready(run())
      times[name].append(time.perf_counter() - t)
  return {name: (ts[0], float(np.median(ts[1:]))) for name, ts in times.items()}


def jax_loop(images, batch_size, repeats=3):
  """Epoch seconds of a jitted train_step called from a Python loop."""
  model = models.pytorch_example()
  opt = optimizers.make_optimizer("adam", 1e-3)
  root = jax.random.key(0)
  step = jax.jit(train.make_train_step(losses.elbo_loss(model.parts), opt), donate_argnums=0)
  box = {"state": train.init_state(models.init_params(model, root), opt)}
  n = images.shape[0]
  def run():
    perm = np.random.default_rng(box["state"].step.item()).permutation(n)
    for i in range(n // batch_size):
      k = train.step_key(root, i)
      x = data.binarize(k, images[perm[i * batch_size:(i + 1) * batch_size]], "dynamic")
      box["state"], m = step(box["state"], x, k)
    return m
  return common.median_time(run, repeats)[1]


def torch_epoch(images, batch_size, repeats=3):
  """Epoch seconds of pytorch/examples vae/main.py's loop, or None without torch."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    from torch import nn  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.manual_seed(0)
  x_all = torch.from_numpy(np.asarray(images) / 255.0).float()

  class VAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
      self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
      h = F.relu(self.fc1(x))
      mu, logvar = self.fc21(h), self.fc22(h)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
      return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

  model = VAE()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  n = x_all.shape[0]

  def run():
    perm = torch.randperm(n)
    for i in range(0, n, batch_size):
      x = x_all[perm[i:i + batch_size]]
      recon, mu, logvar = model(x)
      loss = F.binary_cross_entropy(recon, x, reduction="sum") - 0.5 * torch.sum(
          1 + logvar - mu.pow(2) - logvar.exp())
      opt.zero_grad()
      loss.backward()
      opt.step()
    return loss.item()
  return common.median_time(run, repeats)[1]


def main(argv):
  del argv
  n, repeats = NUM.value, REPEATS.value
  host = _images(n)
  images = jnp.asarray(host)
  ceiling = common.matmul_ceiling()
  model = models.pytorch_example()
  flops = common.train_flops_per_example(model)
  result = {"machine": {"processor": platform.processor() or platform.machine(),
                        "cpus": jax.local_devices()[0].platform, "jax": jax.__version__,
                        "devices": jax.device_count()},
            "matmul_ceiling_gflops": ceiling, "train_flops_per_example": flops,
            "num_examples": n, "throughput": [], "L_scaling": []}
  rows = []
  for bs in (int(b) for b in BATCH_SIZES.value):
    timed = interleaved({"ours": our_epoch(images, bs), "plain": plain_jax_epoch(images, bs)},
                        repeats)
    (first, scan_s), plain_s = timed["ours"], timed["plain"][1]
    compile_s = first - scan_s
    loop_s = jax_loop(images, bs, repeats=repeats)
    torch_s = torch_epoch(host, bs, repeats=repeats)
    steps = n // bs
    row = {"batch_size": bs, "scan_epoch_s": scan_s, "scan_ex_per_s": steps * bs / scan_s,
           "plain_jax_epoch_s": plain_s, "plain_jax_ex_per_s": steps * bs / plain_s,
           "ours_vs_plain_jax": plain_s / scan_s,
           "compile_s": compile_s, "loop_epoch_s": loop_s, "loop_ex_per_s": steps * bs / loop_s,
           "torch_epoch_s": torch_s, "torch_ex_per_s": n / torch_s if torch_s else None,
           "speedup_vs_torch": torch_s / scan_s if torch_s else None,
           "fraction_of_ceiling": flops * steps * bs / scan_s / 1e9 / ceiling["gflops"]}
    result["throughput"].append(row)
    rows.append([bs, row["scan_ex_per_s"], row["plain_jax_ex_per_s"], row["ours_vs_plain_jax"],
                 row["loop_ex_per_s"],
                 row["torch_ex_per_s"] or "no torch (pip install torch==2.13.0)",
                 row["speedup_vs_torch"] or "-", row["fraction_of_ceiling"], compile_s])
  print(f"\nMatmul ceiling: {ceiling['gflops']:.0f} GFLOP/s float32; "
        f"{flops / 1e6:.2f} MFLOP per training example (L = 1)\n")
  print(common.table(["batch", "ours, compiled epoch (ex/s)", "plain JAX lax.scan (ex/s)",
                      "ours / plain JAX", "ours, jitted step in a Python loop (ex/s)",
                      "PyTorch example (ex/s)", "ours / PyTorch", "fraction of ceiling",
                      "compile (s)"], rows))
  base = None
  rows = []
  for L in (int(v) for v in LS.value):
    _, t = jax_epoch(images, 128, num_samples=L, repeats=repeats)
    base = base or (t, common.train_flops_per_example(model, L))
    flop_ratio = common.train_flops_per_example(model, L) / base[1]
    result["L_scaling"].append({"L": L, "epoch_s": t, "time_ratio": t / base[0],
                                "flop_ratio": flop_ratio})
    rows.append([L, t, t / base[0], flop_ratio])
  print("\nCost of L samples (batch 128):\n")
  print(common.table(["L", "epoch (s)", "time / time at L=1", "FLOPs / FLOPs at L=1"], rows))
  common.write_json(OUT.value, result)
  print(f"\nWrote {OUT.value}")


if __name__ == "__main__":
  app.run(main)
