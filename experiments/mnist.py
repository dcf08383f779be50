r"""Trains a VAE on MNIST: the project's main command.

  python -m experiments.mnist                       # PyTorch example's model, 10 epochs
  python -m experiments.mnist --L=5 --epochs=30
  python -m experiments.mnist --latent_dims=2,5,10,20,200 --workdir=runs/sweep
  python -m experiments.mnist --preset=kingma_welling
  python -m experiments.mnist --preset=burda_2016_fast --workdir=runs/burda_fast
  python -m experiments.mnist --model=conv --workdir=runs/conv
  python -m experiments.evaluate --workdir=runs/burda_fast    # log p(x), k = 5000

Every flag of `experiments.train` (the same command; --dataset defaults to mnist).
Presets, with their commands and results: vae_jax/presets.py.

Defaults are the PyTorch example's (784-400-20, relu, batch 128, Adam 1e-3) with
dynamic binarization, so the bound is a true Bernoulli likelihood. Expected:
a test ELBO of about -102.9 nats after 10 epochs and -99.5 after 30 (docs/results.md).
"""

from . import cli
from . import sweep


def main(argv: list[str] | None = None) -> int:
  return cli.main(sweep.entry(), argv)


def console() -> None:
  """The installed package's `vae-jax-mnist` command: `python -m experiments.mnist`."""
  cli.run(main)


if __name__ == "__main__":
  console()
