"""vae-jax: variational autoencoders in JAX (Kingma & Welling, 2014)."""

from vae_jax.config import RunConfig
from vae_jax.distributions import (Bernoulli, ContinuousBernoulli, DiagonalGaussian,
                                   DiscretizedLogistic, Gaussian, MixtureOfGaussians,
                                   StandardNormal, TwoLevelGaussian, bits_per_dim, kl_divergence,
                                   vamp_prior)
from vae_jax.estimators import score_function_surrogate
from vae_jax.flows import IAF, FlowPosterior, Planar
from vae_jax.generation import decode, generate, interpolate, reconstruct
from vae_jax.losses import elbo_loss, iwae_loss, kl_warmup
from vae_jax.models import LIKELIHOODS, VAE, ConvVAE, TwoLayerVAE, init_params
from vae_jax.presets import PRESETS
# The presets' architectures as linen modules (the presets themselves are RunConfigs).
from vae_jax.presets import burda_2016_module as burda_2016
from vae_jax.presets import burda_2016_two_layer_module as burda_2016_two_layer
from vae_jax.presets import conv_32x32x3_module as conv_32x32x3
from vae_jax.presets import conv_mnist_module as conv_mnist
from vae_jax.presets import kingma_welling_frey, kingma_welling_mnist
from vae_jax.presets import pytorch_module as pytorch_example
from vae_jax.objectives import (ESTIMATORS, ElboTerms, Parts, elbo, elbo_terms, iwae_bound,
                                iwae_bound_and_stderr, iwae_surrogate, log_weights)

__version__ = "0.3.0"  # the one place it is said (pyproject.toml reads it)


def __getattr__(name):
  # The run-level API imports orbax and TensorBoard's writer: only when asked for.
  if name in ("load_run", "train_and_evaluate"):
    from vae_jax import runner  # pylint: disable=g-import-not-at-top
    return getattr(runner, name)
  raise AttributeError(f"module 'vae_jax' has no attribute {name!r}")
