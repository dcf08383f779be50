"""The built-in models as builders: each a function (config, image_shape) -> model with
`init(key)` and `parts(params)`, the same signature as your own `--model=MODULE:FUNCTION`,
so `--model=mlp` and `--model=pkg.mod:build` take one path (`config.build_model`). A
conditional run (`--conditional`) calls them with `num_classes=K` too.

Each built-in declares what it supports (`Builder`): the settings' checks, the choice
of the ELBO's estimator and of the training loop read these declarations, never the
model's name. To add a built-in model: a builder here and its `Builder` in `BUILDERS`.
"""

import math
from typing import Callable, NamedTuple

import jax.numpy as jnp

from vae_jax import flows
from vae_jax import models

# Mixed precision: matmuls in bfloat16, parameters, optimizer state, likelihoods and KLs float32.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def _common(config) -> dict:
  """The likelihood head, the matmul precision, the flow and the VampPrior's size."""
  return dict(likelihood=models.likelihood_head(config.likelihood),
              dtype=COMPUTE_DTYPES[config.compute_dtype],
              flow=flows.make(config.posterior, config.flow_steps, config.latent_dim,
                              config.flow_hidden),
              pseudo_inputs=config.pseudo_inputs if config.prior == "vamp" else 0)


def mlp(config, image_shape, num_classes: int = 0) -> models.LinenModel:
  """`hidden_sizes` each side of z (`models.VAE`)."""
  return models.LinenModel(models.VAE(
      input_dim=math.prod(image_shape), latent_dim=config.latent_dim,
      hidden_sizes=tuple(config.hidden_sizes), activation=config.activation,
      image_shape=tuple(image_shape), num_classes=num_classes, **_common(config)))


def conv(config, image_shape, num_classes: int = 0) -> models.LinenModel:
  """Strided convs down and transposed convs up (`models.ConvVAE`)."""
  return models.LinenModel(models.ConvVAE(
      image_shape=tuple(image_shape), latent_dim=config.latent_dim,
      channels=tuple(config.conv_channels), hidden=config.conv_hidden,
      num_classes=num_classes, **_common(config)))


def two_layer(config, image_shape) -> models.LinenModel:
  """Burda et al.'s two stochastic layers: z2 of `latent_dim` on top of z1 of twice that,
  `hidden_sizes` between x and z1 and two layers of 2 * latent_dim between z1 and z2."""
  d, common = config.latent_dim, _common(config)
  return models.LinenModel(models.TwoLayerVAE(
      input_dim=math.prod(image_shape), latent_dims=(2 * d, d),
      hidden_sizes=(tuple(config.hidden_sizes), (2 * d, 2 * d)), activation=config.activation,
      likelihood=common["likelihood"], image_shape=tuple(image_shape), dtype=common["dtype"]))


def m2(config, image_shape, num_classes: int = 0):
  """Kingma et al. (2014)'s M2 (`semisupervised.M2`): the conditional MLP VAE of `mlp`
  beside a classifier q(y|x) of the same hidden widths."""
  from vae_jax import semisupervised  # pylint: disable=g-import-not-at-top
  if not num_classes:
    raise ValueError("model=m2: learns from labels; the training set has none")
  return semisupervised.M2Model(semisupervised.M2(
      mlp(config, image_shape, num_classes).module,
      classifier_sizes=tuple(config.hidden_sizes), activation=config.activation))


class Builder(NamedTuple):
  """A built-in model's builder and what it supports."""
  build: Callable  # (config, image_shape[, num_classes]) -> model
  flows: bool  # a flow posterior (--posterior) and the VampPrior (--prior=vamp)
  labels: bool  # a conditional model (--conditional: called with num_classes)
  closed_form_kl: bool  # its Gaussian q against N(0, I) has a closed-form KL
  convolutions: bool  # convolutional: on a CPU it trains through a host loop (jax#12868)
  semi_supervised: bool = False  # labels as a latent variable (M2): a classifier, J^alpha


BUILDERS = {
    "mlp": Builder(mlp, flows=True, labels=True, closed_form_kl=True, convolutions=False),
    "conv": Builder(conv, flows=True, labels=True, closed_form_kl=True, convolutions=True),
    "two_layer": Builder(two_layer, flows=False, labels=False, closed_form_kl=False,
                         convolutions=False),
    "m2": Builder(m2, flows=False, labels=True, closed_form_kl=True, convolutions=False,
                  semi_supervised=True),
}
