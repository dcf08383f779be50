"""Trains a VAE on MNIST.

  python -m experiments.mnist                       # PyTorch example's model, 10 epochs
  python -m experiments.mnist --L=5 --epochs=30
  python -m experiments.mnist --latent_dims=2,5,10,20,200 --workdir=runs/sweep
  python -m experiments.mnist --hidden_sizes=500 --activation=tanh --optimizer=adagrad \
      --learning_rate=0.02 --batch_size=100        # Kingma & Welling's setting

Defaults are the PyTorch example's (784-400-20, relu, batch 128, Adam 1e-3) with
dynamic binarization, so the bound is a true Bernoulli likelihood. Expected:
a test ELBO near -105 nats after 10 epochs (see README).
"""

import pathlib

from absl import app
from absl import flags

from experiments import common
from vae_jax import data as data_lib
from vae_jax import runner

BINARIZE = flags.DEFINE_enum(
    "binarize", "dynamic", list(data_lib.BINARIZATIONS),
    "dynamic: a fresh Bernoulli draw of each pixel every time an image is used; fixed: one "
    "draw made once with a constant seed; none: grey levels (the PyTorch example's inputs, "
    "for which the Bernoulli bound is not a likelihood).")
DATA_SOURCE = flags.DEFINE_enum("data_source", "idx", ["idx", "tfds"],
                                "idx: the four official files in --data_dir; tfds: "
                                "tfds.load('mnist') (needs tensorflow).")
DOWNLOAD = flags.DEFINE_bool("download", True, "Download missing IDX files (sha256 checked).")
TRAIN_EXAMPLES = flags.DEFINE_integer("train_examples", 0, "Use only the first N training "
                                      "images (0: all 60,000); for quick trials.", lower_bound=0)
TEST_EXAMPLES = flags.DEFINE_integer("test_examples", 0, "Use only the first N test images "
                                     "(0: all 10,000).", lower_bound=0)
flags.set_default(common.WORKDIR, "runs/mnist")


def load() -> data_lib.Dataset:
  data_dir = pathlib.Path(common.DATA_DIR.value or data_lib.default_data_root() / "mnist")
  if DATA_SOURCE.value == "tfds":
    dataset = data_lib.load_mnist_tfds(data_dir)
  else:
    dataset = data_lib.load_mnist(data_dir, download=DOWNLOAD.value)
  return data_lib.subset(dataset, TRAIN_EXAMPLES.value or None, TEST_EXAMPLES.value or None)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.quiet_libraries()
  workdir = pathlib.Path(common.WORKDIR.value)
  try:
    dataset = load()
    common.train_all(common.run_config(binarize=BINARIZE.value), dataset, workdir)
  except common.USER_ERRORS as e:
    common.fail(str(e))


if __name__ == "__main__":
  app.run(main)
