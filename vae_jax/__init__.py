"""vae-jax: variational autoencoders in JAX (Kingma & Welling, 2014)."""

from vae_jax.distributions import (bernoulli_log_prob, bernoulli_sample, gaussian_log_prob,
                                   gaussian_sample, kl_standard_normal,
                                   standard_normal_log_prob)
from vae_jax.estimators import score_function_surrogate
from vae_jax.generation import decode, generate, interpolate, reconstruct, sample_prior
from vae_jax.models import (PRESETS, VAE, Decoder, Encoder, burda_2016, init_params,
                            kingma_welling_frey, kingma_welling_mnist, pytorch_example)
from vae_jax.objectives import (ESTIMATORS, ElboTerms, elbo, elbo_terms, iwae_bound,
                                iwae_bound_and_stderr, log_weights)

__version__ = "0.1.0"
