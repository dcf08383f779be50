"""Every named configuration, in one place: `--preset=NAME` sets these flags (flags given
on the command line still win). Each function's docstring gives its command and the
result it is expected to reach (README's results section has the measured numbers).

To add a preset: write a function returning flag values, register it in `PRESETS`.
"""


def pytorch_example() -> dict:
  """pytorch/examples `vae/main.py`: 784-400-20 relu, batch 128, Adam 1e-3 (the defaults).

  python -m experiments.mnist --preset=pytorch_example
  Expected: test ELBO about -102.9 nats after 10 epochs, -99.5 after 30.
  """
  return {}


def kingma_welling() -> dict:
  """Kingma & Welling (2014), MNIST: 500 tanh units, Adagrad 0.02, batch 100.

  python -m experiments.mnist --preset=kingma_welling --epochs=100
  """
  return dict(hidden_sizes=["500"], activation="tanh", optimizer="adagrad",
              learning_rate=0.02, batch_size=100)


def burda_2016() -> dict:
  """Burda et al. (2016), one stochastic layer: 784-200-200-50 tanh, batch 20, Adam with
  their 3^i-epoch schedule, 3,280 epochs.

  python -m experiments.mnist --preset=burda_2016 --workdir=runs/burda
  The paper: -86.76 nats (k = 5000) after 3,280 epochs. Measured alone on a 2-core CPU:
  epoch 557 after 46.9 min, test ELBO -92.36, log p(x) -87.87 (README's curve).
  """
  return dict(hidden_sizes=["200", "200"], activation="tanh", latent_dim=50, batch_size=20,
              lr_schedule="burda", epochs=3280)


def burda_2016_fast() -> dict:
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
  return dict(hidden_sizes=["200", "200"], activation="tanh", latent_dim=50, batch_size=250,
              learning_rate=2e-3, adam_b2=0.95, lr_schedule="warmup_cosine", warmup_epochs=5,
              epochs=1200, eval_every=10, prng="philox4x32")


def burda_2016_two_layer() -> dict:
  """Burda et al. (2016), two stochastic layers: 784-200-200-100(z1)-100-100-50(z2) tanh,
  the ELBO with estimator A (no closed-form KL), the fast preset's optimizer.

  python -m experiments.mnist --preset=burda_2016_two_layer --workdir=runs/burda_2layer
  The paper: -85.33 nats (k = 5000) after 3,280 epochs of their schedule.
  """
  return {**burda_2016_fast(), "model": "two_layer", "estimator": "monte_carlo"}


def conv_mnist() -> dict:
  """A conv VAE (32 and 64 channels of 4x4 stride-2 convs, 256 dense units, 20 latent) on
  binarized MNIST, Adam 1e-3, batch 128.

  python -m experiments.mnist --preset=conv_mnist --workdir=runs/conv
  """
  return dict(model="conv", latent_dim=20)


PRESETS = {f.__name__: f for f in (pytorch_example, kingma_welling, burda_2016, burda_2016_fast,
                                   burda_2016_two_layer, conv_mnist)}


def get(name: str | None) -> dict:
  """The flag values of preset `name` (None: no change)."""
  if name is None:
    return {}
  if name not in PRESETS:
    raise ValueError(f"--preset={name}: expected one of {sorted(PRESETS)}")
  return PRESETS[name]()
