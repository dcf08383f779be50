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
from benchmarks.epochs import config_epoch, interleaved, plain_jax_epoch, random_images
from vae_jax import data
from vae_jax import losses
from vae_jax import models
from vae_jax import presets
from vae_jax import optimizers
from vae_jax import train
from vae_jax.config import RunConfig

BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["20", "128", "1024"], "Batch sizes to time.")
LS = flags.DEFINE_list("Ls", ["1", "5", "10", "20"], "Samples of z for the L-scaling table.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Timed epochs per figure (median).", lower_bound=1)
NUM = flags.DEFINE_integer("num_examples", 60000, "Examples per epoch.", lower_bound=1024)
CEILING = flags.DEFINE_list("ceiling_sizes", ["1024", "2048", "3072"], "Square matmul "
                            "sizes of the ceiling (the best of them).")
OUT = flags.DEFINE_string("out", "runs/benchmarks/throughput.json", "Where the JSON goes.")


def our_epoch(images, batch_size, num_samples=1):
  """A run() callable: one epoch of our compiled training of the PyTorch example's model."""
  return config_epoch(RunConfig(batch_size=batch_size, num_samples=num_samples), images)


def jax_loop(images, batch_size, repeats=3):
  """Epoch seconds of a jitted train_step called from a Python loop."""
  model = presets.pytorch_module()
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
  host = random_images(n)
  images = jnp.asarray(host)
  ceiling = common.matmul_ceiling(sizes=[int(n) for n in CEILING.value])
  model = presets.pytorch_module()
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
    loop_s = jax_loop(images.reshape(n, -1), bs, repeats=repeats)
    torch_s = torch_epoch(host.reshape(n, -1), bs, repeats=repeats)
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
    _, t = common.median_time(our_epoch(host, 128, num_samples=L), repeats)
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
