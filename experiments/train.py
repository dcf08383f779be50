r"""Trains a VAE on any data set: MNIST, Frey Face, your own arrays, a folder of images, TFDS.

  python -m experiments.train --dataset=npz --data_path=my_images.npz --model=conv
  python -m experiments.train --dataset=folder --data_path=faces/ --image_size=32 \
      --model=conv --binarize=none --likelihood=discretized_logistic
  python -m experiments.train --dataset=tfds --tfds_name=fashion_mnist --model=conv
  python -m experiments.train --dataset=mnist --model=two_layer
  python -m experiments.train --model=examples.nnx_vae:build   # your own model

Images flow as [batch, H, W, C]; --model=mlp flattens them inside the model.
Grey-level data takes any --binarize; colour data --binarize=none with the
discretized logistic or continuous Bernoulli likelihood. The workdir defaults to
runs/<dataset>. Same flags as `experiments.mnist`.
"""

from . import cli
from . import sweep


def main(argv: list[str] | None = None) -> int:
  return cli.main(sweep.entry(), argv)


def console() -> None:
  """The installed package's `vae-jax-train` command: `python -m experiments.train`."""
  cli.run(main)


if __name__ == "__main__":
  console()
