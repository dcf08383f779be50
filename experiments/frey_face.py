"""Kingma & Welling's Frey Face model and its face manifold (Figure 4, left).

  python -m experiments.frey_face

The `frey_face` preset (vae_jax/presets.py): 560-200-2 tanh, a Gaussian decoder
with learned variance, Adam 1e-3, batch 100, 300 epochs (about 30 s); every flag of
`experiments.train` still applies. Writes runs/frey_face/manifold.png.
"""

from . import cli
from . import sweep


def main(argv: list[str] | None = None) -> int:
  return cli.main(sweep.entry(default_preset="frey_face"), argv)


if __name__ == "__main__":
  cli.run(main)
