"""Every named configuration, in one home: each a complete `RunConfig`, its docstring
giving the command that runs it and the result it reached. `--preset=NAME` starts
from one (flags given on the command line still win); the Python constructors
(`vae_jax.burda_2016()` ...), Figure 2, Frey Face and Table 1 read the same ones,
so an architecture is defined once.

To add a preset: write a function here returning a RunConfig, and list it in `PRESETS`.
"""

import dataclasses
import os
import re
import runpy

import flax.linen as nn

from vae_jax import models
from vae_jax import settings
from vae_jax.config import RunConfig


def pytorch_example() -> RunConfig:
  """pytorch/examples `vae/main.py`: 784-400-20 relu, batch 128, Adam 1e-3 (the defaults).

  python -m experiments.mnist
  Measured: test ELBO -102.81 nats after 10 epochs (27 s), -99.54 after 30 (docs/results.md).
  """
  return RunConfig()


def kingma_welling() -> RunConfig:
  """Kingma & Welling (2014), MNIST: 500 tanh units each side, Adagrad 0.02, batch 100.

  python -m experiments.mnist --preset=kingma_welling --epochs=100
  """
  return RunConfig(hidden_sizes=(500,), activation="tanh", optimizer="adagrad",
                   learning_rate=0.02, batch_size=100)


def frey_face() -> RunConfig:
  """Kingma & Welling (2014), Frey Face: 560-200-2 tanh, a Gaussian decoder whose mean goes
  through a sigmoid (learned variance), grey levels; Adam 1e-3, batch 100, 300 epochs.

  python -m experiments.frey_face
  Measured: test ELBO 848 nats per image (train 854), about 30 s (docs/results.md).
  """
  return RunConfig(dataset="frey_face", binarize="none", likelihood="gaussian_sigmoid_mean",
                   latent_dim=2, hidden_sizes=(200,), activation="tanh", batch_size=100,
                   epochs=300, eval_batch_size=200)


def figure2_mnist() -> RunConfig:
  """Kingma & Welling's Figure 2 setting for MNIST: 500 tanh units, Adagrad 0.02, batch
  100, L = 1, the analytic KL, 10 epochs per latent size (--budget=paper: 10^8 samples).

  python -m experiments.figure2 --dataset=mnist
  Measured: test bound -150.8, -132.1, -118.1, -111.0, -120.5 for 3, 5, 10, 20, 200 latent
  units after 10 epochs (docs/results.md).
  """
  return dataclasses.replace(kingma_welling(), epochs=10)


def figure2_frey_face() -> RunConfig:
  """Kingma & Welling's Figure 2 setting for Frey Face: 200 tanh units, Adagrad 0.02,
  batch 100, the Gaussian decoder with a sigmoid mean, 200 epochs per latent size.

  python -m experiments.figure2 --dataset=frey_face --epochs=100
  """
  return dataclasses.replace(frey_face(), optimizer="adagrad", learning_rate=0.02, epochs=200,
                             latent_dim=10, eval_batch_size=1000)


def burda_2016() -> RunConfig:
  """Burda et al. (2016), one stochastic layer: 784-200-200-50 tanh, batch 20, Adam (eps
  1e-4) with their 3^i-epoch schedule, 3,280 epochs.

  python -m experiments.mnist --preset=burda_2016 --workdir=runs/burda
  The paper: -86.76 nats (k = 5000) after 3,280 epochs. Measured alone on a 2-core CPU:
  epoch 557 after 46.9 min, test ELBO -92.36, log p(x) -87.87 (docs/results.md's curve).
  """
  return RunConfig(hidden_sizes=(200, 200), activation="tanh", latent_dim=50, batch_size=20,
                   lr_schedule="burda", adam_eps=1e-4, epochs=3280)


def burda_2016_fast() -> RunConfig:
  """Burda et al.'s one-layer VAE row in a fraction of their schedule: the same model and
  objective (ELBO, L = 1, dynamic binarization), batch 250, Adam 2e-3 with b2 = 0.95,
  5 epochs of warm-up then a cosine decay over 1,200 epochs, evaluated every 10; Philox
  draws (its binarization noise costs a CPU half of Threefry's).

  python -m experiments.mnist --preset=burda_2016_fast --workdir=runs/burda_fast
  python -m experiments.evaluate --workdir=runs/burda_fast
  Measured alone on a 2-core CPU: 43.9 min of training, test ELBO -90.20 (L = 1),
  log p(x) -86.70 (k = 5000; Monte Carlo s.e. 0.005, over the test images 0.23).
  With Threefry (--prng=threefry2x32): 45.9 min, -90.11, -86.63.
  """
  return dataclasses.replace(burda_2016(), batch_size=250, learning_rate=2e-3, adam_b2=0.95,
                             adam_eps=1e-8,
                             lr_schedule="warmup_cosine", warmup_epochs=5, epochs=1200,
                             eval_every=10, prng="philox4x32")


# Richer posteriors and priors at the fast preset's budget: each costs more per epoch, so
# each trains 1,200 x (the fast preset's epoch time / its own) epochs, the ratio measured
# side by side on 2 CPU cores (6-epoch runs, median epoch times: 1.62 s for the fast
# preset, 2.05 s with the VampPrior, 2.35 s with IAF, 2.60 s with both).

def burda_2016_vamp() -> RunConfig:
  """The fast preset with the VampPrior (Tomczak & Welling, 2018) of 100 pseudo-inputs and
  20 epochs of KL warm-up (without it the posterior collapses onto the prior: 0 active
  units), 945 epochs.

  python -m experiments.mnist --preset=burda_2016_vamp --workdir=runs/vamp
  python -m experiments.evaluate --workdir=runs/vamp --test_examples=2000
  Measured on 2 CPU cores (trained beside two other runs): test ELBO -87.08, log p(x)
  -83.89 on the first 2,000 test images (the fast preset: -86.34), 25 active units.
  """
  return dataclasses.replace(burda_2016_fast(), prior="vamp", pseudo_inputs=100,
                             kl_warmup_epochs=20, estimator="monte_carlo", epochs=945)


def burda_2016_vamp_20min() -> RunConfig:
  """Burda et al.'s one-layer VAE figure (-86.76 nats) in 20 minutes on 2 CPU cores: the
  VampPrior preset (`burda_2016_vamp`) on a 450-epoch schedule.

  python -m experiments.mnist --preset=burda_2016_vamp_20min --workdir=runs/vamp_20min
  python -m experiments.evaluate --workdir=runs/vamp_20min
  Measured alone on a 2-core CPU (2026-12-02): 18.5 min from the command's start to its
  last epoch, test ELBO -88.23 (L = 1), log p(x) -84.85 on all 10,000 test images
  (k = 5000; Monte Carlo s.e. 0.004, over the images 0.23), evaluated in 6.2 min.
  """
  return dataclasses.replace(burda_2016_vamp(), epochs=450)


def burda_2016_iaf() -> RunConfig:
  """The fast preset with an inverse autoregressive flow posterior (Kingma et al., 2016):
  2 steps of one 200-unit MADE layer each, conditioned on 50 context units, 824 epochs.

  python -m experiments.mnist --preset=burda_2016_iaf --workdir=runs/iaf
  python -m experiments.evaluate --workdir=runs/iaf --test_examples=2000
  Measured on 2 CPU cores (trained beside two other runs): test ELBO -88.45, log p(x)
  -85.23 on the first 2,000 test images (the fast preset: -86.34), 20 active units.
  """
  return dataclasses.replace(burda_2016_fast(), posterior="iaf", flow_steps=2,
                             flow_hidden=(200,), estimator="monte_carlo", epochs=824)


def burda_2016_iaf_vamp() -> RunConfig:
  """Both: the IAF posterior of `burda_2016_iaf` and the VampPrior of `burda_2016_vamp`,
  745 epochs.

  python -m experiments.mnist --preset=burda_2016_iaf_vamp --workdir=runs/iaf_vamp
  python -m experiments.evaluate --workdir=runs/iaf_vamp --test_examples=2000
  Measured on 2 CPU cores (trained beside two other runs): test ELBO -85.56, log p(x)
  -82.84 on the first 2,000 test images (the fast preset: -86.34), 28 active units;
  on all 10,000: log p(x) -83.02 (k = 5000; Monte Carlo s.e. 0.003, over the images 0.22).
  """
  return dataclasses.replace(burda_2016_iaf(), prior="vamp", pseudo_inputs=100,
                             kl_warmup_epochs=20, epochs=745)


def burda_2016_iaf_vamp_45min() -> RunConfig:
  """Aimed at all of Burda et al.'s Table 1 (-82.90 nats) in 45 minutes on 2 CPU cores:
  the IAF posterior and VampPrior of `burda_2016_iaf_vamp` on a 590-epoch schedule (what
  fits 43 minutes at the 4.35 s an epoch, evaluations included, that it took on the 2
  cores on 2026-12-02).

  python -m experiments.mnist --preset=burda_2016_iaf_vamp_45min --workdir=runs/iaf_vamp_45min
  python -m experiments.evaluate --workdir=runs/iaf_vamp_45min
  Measured alone on a 2-core CPU (2026-12-02): 45.6 min from the command's start to its
  last epoch, test ELBO -85.87 (L = 1), log p(x) -83.22 on all 10,000 test images
  (k = 5000; Monte Carlo s.e. 0.003, over the images 0.22), evaluated in 12.5 min:
  0.32 nats short of -82.90 (docs/results.md says what it would need).
  """
  return dataclasses.replace(burda_2016_iaf_vamp(), epochs=590)


def burda_2016_two_layer() -> RunConfig:
  """Burda et al. (2016), two stochastic layers: 784-200-200-100(z1)-100-100-50(z2) tanh,
  the ELBO with estimator A (no closed-form KL), the fast preset's optimizer.

  python -m experiments.mnist --preset=burda_2016_two_layer --workdir=runs/burda_2layer
  The paper: -85.33 nats (k = 5000) after 3,280 epochs of their schedule.
  """
  return dataclasses.replace(burda_2016_fast(), model="two_layer", estimator="monte_carlo")


def conv_mnist() -> RunConfig:
  """A conv VAE (32 and 64 channels of 4x4 stride-2 convs, 256 dense units, 20 latent) on
  binarized MNIST, Adam 1e-3, batch 128.

  python -m experiments.mnist --preset=conv_mnist --workdir=runs/conv
  Measured: one epoch 92 s on 2 cores (655 images/s, docs/performance.md).
  """
  return RunConfig(model="conv", latent_dim=20)


def conv_32x32x3() -> RunConfig:
  """A conv VAE for 32x32 colour images (CIFAR-10, SVHN): 64 and 128 channels, 512 dense
  units, 64 latent units, grey levels kept, a discretized logistic likelihood (bits per
  dimension are logged).

  python -m experiments.train --dataset=tfds --tfds_name=cifar10 --preset=conv_32x32x3
  """
  return RunConfig(model="conv", latent_dim=64, conv_channels=(64, 128), conv_hidden=512,
                   binarize="none", likelihood="discretized_logistic")


def gradient_variance() -> RunConfig:
  """The PyTorch example's model after 2 epochs: the model of the gradient-variance study.

  python -m experiments.gradient_variance
  Measured: the score-function estimator's variance about 6,000 times the
  reparameterization estimator's at L = 1, 5 and 50 (docs/results.md).
  """
  return dataclasses.replace(pytorch_example(), epochs=2)


def table1_row(name: str, epochs: int) -> RunConfig:
  """A row of Burda et al.'s Table 1 at a budget of `epochs`: the fast preset's model and
  optimizer (its warm-up and evaluation scaled to the epochs), with the row's objective
  or model. Rows: vae_1layer, iwae_1layer (IWAE, k = 5), vae_2layer (two stochastic
  layers), conv (the conv VAE).

  python -m experiments.table1 --minutes=8 --rows=vae_1layer,iwae_1layer,vae_2layer,conv
  Measured at 8 minutes a row (docs/results.md): log p(x) -89.27, -90.12, -92.83 (2,000 images),
  -89.08 (conv, 200 images).
  """
  base = dataclasses.replace(burda_2016_fast(), epochs=epochs,
                             warmup_epochs=max(1, epochs // 100),
                             eval_every=max(1, epochs // 10))
  rows = {"vae_1layer": {}, "iwae_1layer": dict(objective="iwae", iwae_samples=5),
          "vae_2layer": dict(model="two_layer", estimator="monte_carlo"),
          "conv": dict(model="conv", latent_dim=20)}
  if name not in rows:
    raise ValueError(f"rows: unknown {name!r}; expected some of {list(rows)}")
  return dataclasses.replace(base, **rows[name])


TABLE1_ROWS = ("vae_1layer", "iwae_1layer", "vae_2layer", "conv")

def kingma_2014_m2() -> RunConfig:
  """Kingma et al. (2014)'s M2 on MNIST with 100 labels (10 a class, drawn by the seed):
  500 softplus units each side and in the classifier, z of 50, Adam 3e-4, batches of 100
  rows with hidden labels and 100 labelled ones.

  python -m experiments.mnist --preset=kingma_2014_m2 --workdir=runs/m2_100
  python -m experiments.mnist --preset=kingma_2014_m2 --sweep=labelled_examples=100,600,1000,3000 --workdir=runs/m2
  Measured on 2 CPU cores (2026-12-07, one label draw): test error 16.82% after 80 epochs,
  67.6 min (the paper: 11.97% +- 1.71 with 100 labels).
  """
  return RunConfig(model="m2", labelled_examples=100, hidden_sizes=(500,), latent_dim=50,
                   activation="softplus", learning_rate=3e-4, batch_size=100,
                   labelled_batch_size=100, alpha=0.1, epochs=80, eval_every=5)


def kingma_2014_m1() -> RunConfig:
  """Kingma et al. (2014)'s M1 on MNIST, the first half of M1+M2: 600-600 softplus units
  each side, z of 50, Adam 3e-4, batch 100.

  python -m experiments.mnist --preset=kingma_2014_m1 --workdir=runs/m1
  Measured on 2 CPU cores (2026-12-07): test ELBO -94.44 after 50 epochs, 5.8 min.
  """
  return RunConfig(hidden_sizes=(600, 600), latent_dim=50, activation="softplus",
                   learning_rate=3e-4, batch_size=100, epochs=50, eval_every=10)


def kingma_2014_m1_m2() -> RunConfig:
  """Kingma et al. (2014)'s M1+M2 on MNIST with 100 labels: M2 (500 softplus units, z of
  50, a Gaussian likelihood) on draws from the posterior of the M1 run in runs/m1.

  python -m experiments.mnist --preset=kingma_2014_m1 --workdir=runs/m1
  python -m experiments.mnist --preset=kingma_2014_m1_m2 --workdir=runs/m1_m2_100
  The paper: test error 3.33% (+- 0.14) with 100 labels. Measured on 2 CPU cores
  (2026-12-08, three label draws): 12.51% +- 1.70 after 30 epochs (docs/results.md).
  """
  return dataclasses.replace(kingma_2014_m2(), m1_workdir="runs/m1", binarize="none",
                             likelihood="gaussian", epochs=30, eval_every=5)


PRESETS = {f.__name__: f for f in (
    pytorch_example, kingma_welling, frey_face, figure2_mnist, figure2_frey_face, burda_2016,
    burda_2016_fast, burda_2016_vamp, burda_2016_vamp_20min, burda_2016_iaf, burda_2016_iaf_vamp,
    burda_2016_iaf_vamp_45min, burda_2016_two_layer, conv_mnist, conv_32x32x3, gradient_variance,
    kingma_2014_m2, kingma_2014_m1, kingma_2014_m1_m2)}


def describe(name: str) -> tuple[str, str]:
  """(what preset `name` is, its measured or published result) from its docstring:
  the first sentence, and the text from the line starting "Measured" or "The paper"
  (or "")."""
  doc = PRESETS[name].__doc__ or ""
  what = re.split(r"(?<! al)\.\s", " ".join(doc.split("\n\n")[0].split()))[0].rstrip(".")
  if len(what) > 100:  # the summary before the details
    what = what.split(": ")[0]
  lines = [l.strip() for l in doc.splitlines()]
  result = next((" ".join(lines[i:]).split("  ")[0] for i, l in enumerate(lines)
                 if l.startswith(("Measured", "The paper"))), "")
  return what, " ".join(result.split())


def get(name: str) -> RunConfig:
  """The RunConfig of preset `name`."""
  if name not in PRESETS:
    raise ValueError(f"preset={name}: expected one of {sorted(PRESETS)}"
                     f"{settings.nearest(name, sorted(PRESETS))}")
  return PRESETS[name]()


def from_file(spec: str) -> RunConfig:
  """The RunConfig of an experiment file, `spec` = "PATH.py" or "PATH.py:ARG" (the
  Flax examples' `--config`): the file's `get_config()` (or `get_config(ARG)`) returns
  a RunConfig, or a dict of its settings (an ml_collections ConfigDict's `to_dict()`
  too), each checked as config.json's are. The file runs: name only your own."""
  path, _, arg = spec.partition(".py:")
  path = path if path.endswith(".py") else path + ".py"
  source = f"config={spec}"
  if not os.path.isfile(path):
    raise ValueError(f"{source}: no file {path}; pass an experiment file PATH.py[:ARG] "
                     f"defining get_config()")
  try:
    made = runpy.run_path(path).get("get_config")
  except Exception as e:  # pylint: disable=broad-except  (their code: one line)
    raise ValueError(f"{source}: running {path} failed ({type(e).__name__}: {e})") from None
  if not callable(made):
    raise ValueError(f"{source}: {path} defines no get_config(); add one returning a "
                     f"RunConfig or a dict of its settings")
  try:
    got = made(arg) if arg else made()
  except Exception as e:  # pylint: disable=broad-except
    call = f"get_config({arg!r})" if arg else "get_config()"
    raise ValueError(f"{source}: {call} failed ({type(e).__name__}: {e})") from None
  if isinstance(got, RunConfig):
    return got
  got = got.to_dict() if callable(getattr(got, "to_dict", None)) else got
  if not isinstance(got, dict):
    raise ValueError(f"{source}: get_config returned {type(got).__name__}; return a RunConfig "
                     f"or a dict of its settings")
  return settings.from_dict(RunConfig, got, source)


# The architectures of the presets, as linen modules: each reads its preset in
# `vae_jax.presets`, where the architecture is defined.

def _preset_module(name: str, image_shape=(28, 28, 1), **changes) -> nn.Module:
  """Preset `name`'s model; an MLP takes flat `[batch, H * W * C]` inputs, as these
  constructors always have."""
  config = dataclasses.replace(get(name), **changes)
  module = config.build_model(image_shape).module
  return module if config.model == "conv" else module.clone(image_shape=None)


def pytorch_module(latent_dim: int = 20) -> "models.VAE":
  """pytorch/examples `vae/main.py`: 784-400-20, relu, Bernoulli decoder."""
  return _preset_module("pytorch_example", latent_dim=latent_dim)


def kingma_welling_mnist(latent_dim: int = 20) -> "models.VAE":
  """Kingma & Welling (2014), MNIST: one hidden layer of 500 tanh units each side."""
  return _preset_module("kingma_welling", latent_dim=latent_dim)


def kingma_welling_frey(latent_dim: int = 10) -> "models.VAE":
  """Kingma & Welling (2014), Frey Face: 200 tanh units, Gaussian decoder whose mean
  goes through a sigmoid, learned variance, 28x20 images."""
  return _preset_module("frey_face", (28, 20, 1), latent_dim=latent_dim)


def burda_2016_module(latent_dim: int = 50) -> "models.VAE":
  """Burda et al. (2016), Table 1, one stochastic layer: 784-200-200-50, tanh."""
  return _preset_module("burda_2016", latent_dim=latent_dim)


def burda_2016_two_layer_module() -> "models.TwoLayerVAE":
  """Burda et al. (2016), Table 1, two stochastic layers: 784-200-200-100(z1)-100-100-50(z2),
  tanh, generative path mirrored."""
  return _preset_module("burda_2016_two_layer")


def conv_mnist_module(latent_dim: int = 20) -> "models.ConvVAE":
  """A conv VAE for 28x28x1 images: 32 and 64 channels, 256 dense units, Bernoulli."""
  return _preset_module("conv_mnist", latent_dim=latent_dim)


def conv_32x32x3_module(latent_dim: int = 64) -> "models.ConvVAE":
  """A conv VAE for 32x32 colour images (CIFAR-10, SVHN): a discretized logistic
  likelihood (report bits per dimension)."""
  return _preset_module("conv_32x32x3", (32, 32, 3), latent_dim=latent_dim)


MODULES = {"pytorch_example": pytorch_module, "kingma_welling_mnist": kingma_welling_mnist,
           "kingma_welling_frey": kingma_welling_frey, "burda_2016": burda_2016_module,
           "burda_2016_two_layer": burda_2016_two_layer_module, "conv_mnist": conv_mnist_module,
           "conv_32x32x3": conv_32x32x3_module}
