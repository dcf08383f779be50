r"""A Flax NNX VAE, written as a user would, trained by vae-jax's runner with every
runner feature (checkpoints, resume, metrics, pictures, `experiments.evaluate`).

  python -m examples.nnx_vae --workdir=runs/nnx_vae --epochs=10
  python -m examples.nnx_vae --workdir=runs/nnx_vae --epochs=20      # resumes
  python -m experiments.evaluate --workdir=runs/nnx_vae              # log p(x), k = 5000

The model: an NNX encoder (two ReLU layers, then the mean and log-variance of
q(z|x)) and an NNX decoder with a residual hidden block, whose logits give a
Bernoulli p(x|z). The runner needs only an object with `init(key) -> params`
and `parts(params) -> (encoder, decoder, prior)`: `NNXModel` adapts any NNX module
with `encode` and `decode` to that, with the parameters as a plain pytree
(`nnx.split` / `nnx.merge`), so checkpoints are ordinary arrays. `build` is what
`--model=examples.nnx_vae:build` names: `config.json` records it, and
`experiments.evaluate` rebuilds the model from it.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

import vae_jax
from experiments import cli
from experiments import sweep


class Encoder(nnx.Module):
  """x `[..., D]` -> q(z|x), a diagonal Gaussian over `[..., latent]`."""

  def __init__(self, dim: int, hidden: int, latent: int, rngs: nnx.Rngs):
    self.hidden = nnx.List([nnx.Linear(dim, hidden, rngs=rngs),
                            nnx.Linear(hidden, hidden, rngs=rngs)])
    self.out = nnx.Linear(hidden, 2 * latent, rngs=rngs)

  def __call__(self, x):
    h = x
    for layer in self.hidden:
      h = jax.nn.relu(layer(h))
    mean, logvar = jnp.split(self.out(h), 2, axis=-1)
    return vae_jax.DiagonalGaussian(mean, logvar)


class Decoder(nnx.Module):
  """z `[..., latent]` -> p(x|z), Bernoulli over `[..., D]`, with a residual block."""

  def __init__(self, latent: int, hidden: int, dim: int, rngs: nnx.Rngs):
    self.inp = nnx.Linear(latent, hidden, rngs=rngs)
    self.res = nnx.Linear(hidden, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, dim, rngs=rngs)

  def __call__(self, z):
    h = jax.nn.relu(self.inp(z))
    h = h + jax.nn.relu(self.res(h))
    return vae_jax.Bernoulli(self.out(h))


class NNXVAE(nnx.Module):
  """Images `[..., H, W, C]` in, a likelihood over images out."""

  def __init__(self, image_shape: tuple[int, ...], hidden: int, latent: int, rngs: nnx.Rngs):
    self.image_shape = tuple(image_shape)
    dim = math.prod(image_shape)
    self.encoder = Encoder(dim, hidden, latent, rngs)
    self.decoder = Decoder(latent, hidden, dim, rngs)

  def encode(self, x):
    return self.encoder(x.reshape(x.shape[:-3] + (-1,)))

  def decode(self, z):
    logits = self.decoder(z).logits
    return vae_jax.Bernoulli(logits.reshape(logits.shape[:-1] + self.image_shape),
                             event_ndims=len(self.image_shape))


@dataclasses.dataclass(frozen=True)
class NNXModel:
  """An NNX module with `encode` and `decode` as the runner's model: `init(key)`
  gives its parameters as a plain dict of arrays, `parts(params)` merges them back.
  Frozen (hashable): compiled evaluations take `parts` as a static argument."""
  image_shape: tuple[int, ...]
  hidden: int
  latent: int

  def _module(self, key):
    return NNXVAE(self.image_shape, self.hidden, self.latent, nnx.Rngs(key))

  def init(self, key: jax.Array):
    return nnx.to_pure_dict(nnx.state(self._module(key), nnx.Param))

  def parts(self, params) -> vae_jax.Parts:
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: self._module(jax.random.key(0))))
    nnx.replace_by_pure_dict(abstract, params)
    module = nnx.merge(graphdef, abstract)
    return vae_jax.Parts(module.encode, module.decode, vae_jax.StandardNormal(self.latent))


def build(config: vae_jax.RunConfig, image_shape) -> NNXModel:
  """`--model=examples.nnx_vae:build`: the model for `config` and images of `image_shape`
  (`--latent_dim`, and the first of `--hidden_sizes` as the width)."""
  return NNXModel(tuple(image_shape), config.hidden_sizes[0], config.latent_dim)


def main(argv: list[str] | None = None) -> int:
  """`experiments.train`'s command with this model: every flag of it works."""
  argv = list(argv) if argv is not None else None
  import sys  # pylint: disable=g-import-not-at-top
  argv = sys.argv[1:] if argv is None else argv
  if not any(a.startswith("--model") for a in argv):
    argv = ["--model=examples.nnx_vae:build", *argv]
  return cli.main(sweep.entry(), argv)


if __name__ == "__main__":
  cli.run(main)
