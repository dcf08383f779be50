"""The settings of one training run (`RunConfig`) and what they build: the model,
the optimizer, the loss and the initial state. Plain arguments, no flags: the
experiments parse their flags into a `RunConfig`.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from vae_jax import losses
from vae_jax import models
from vae_jax import train

# Settings that may change when a run resumes (train longer, lower the step size);
# every other one must match.
RESUMABLE = ("epochs", "keep_checkpoints", "skip_nonfinite", "learning_rate", "eval_every",
             "data_path", "log_grad_norm")
MODELS = ("mlp", "conv", "two_layer")
# Mixed precision: matmuls in bfloat16, parameters, optimizer state, likelihoods and KLs float32.
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
# Runs written before images were [H, W, C] recorded only the flattened size.
LEGACY_IMAGE_SHAPES = {784: (28, 28, 1), 560: (28, 20, 1)}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The settings of one training run (the experiments' flags, parsed)."""
  dataset: str = "mnist"
  data_path: str = ""
  tfds_name: str = ""
  image_size: int = 0
  model: str = "mlp"
  compute_dtype: str = "float32"
  latent_dim: int = 20
  hidden_sizes: tuple[int, ...] = (400,)
  activation: str = "relu"
  likelihood: str = "bernoulli"
  objective: str = "elbo"
  num_samples: int = 1
  estimator: str = "analytic"
  beta: float = 1.0
  kl_warmup_epochs: int = 0
  iwae_samples: int = 5
  iwae_gradient: str = "standard"
  batch_size: int = 128
  epochs: int = 10
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_schedule: str = "constant"
  warmup_epochs: int = 0
  adam_b2: float = 0.999
  binarize: str = "dynamic"
  seed: int = 0
  prng: str = "threefry2x32"
  eval_batch_size: int = 1000
  keep_checkpoints: int = 3
  skip_nonfinite: bool = False
  eval_every: int = 1
  log_grad_norm: bool = False

  def __post_init__(self):
    # A non-finite number trains nothing and cannot be written as strict JSON.
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{field.name}={value}: must be a finite number")

  def root_key(self) -> jax.Array:
    """The run's root key, the source of all its randomness: `seed` under jax.random's
    `prng` implementation ("threefry2x32", JAX's default; "philox4x32", Random123's
    Philox, draws the binarization noise twice as fast on a CPU)."""
    try:
      return jax.random.key(self.seed, impl=self.prng)
    except ValueError as e:  # an unknown name, or one this JAX does not have yet
      raise ValueError(f"prng={self.prng!r}: {e} (jax {jax.__version__})") from None

  def build_model(self, image_shape: tuple[int, ...]):
    """The model of these settings for images of `image_shape` (H, W, C).

    mlp: `hidden_sizes` each side. conv: `models.ConvVAE`. two_layer: Burda et
    al.'s two stochastic layers, z2 of `latent_dim` on top of z1 of twice that,
    `hidden_sizes` between x and z1 and two layers of 2 * latent_dim between z1 and z2.
    """
    head = models.likelihood_head(self.likelihood)
    image_shape = tuple(image_shape)
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"compute_dtype={self.compute_dtype!r}: expected one of "
                       f"{list(COMPUTE_DTYPES)}")
    dtype = COMPUTE_DTYPES[self.compute_dtype]
    if self.model == "mlp":
      return models.VAE(input_dim=math.prod(image_shape), latent_dim=self.latent_dim,
                        hidden_sizes=tuple(self.hidden_sizes), activation=self.activation,
                        likelihood=head, image_shape=image_shape, dtype=dtype)
    if self.model == "conv":
      return models.ConvVAE(image_shape=image_shape, latent_dim=self.latent_dim, likelihood=head,
                            dtype=dtype)
    if self.model == "two_layer":
      d = self.latent_dim
      return models.TwoLayerVAE(input_dim=math.prod(image_shape), latent_dims=(2 * d, d),
                                hidden_sizes=(tuple(self.hidden_sizes), (2 * d, 2 * d)),
                                activation=self.activation, likelihood=head,
                                image_shape=image_shape, dtype=dtype)
    raise ValueError(f"model={self.model!r}: expected one of {list(MODELS)}")


OBJECTIVES = ("elbo", "iwae")


def make_optimizer(config: RunConfig, num_train: int):
  return train.make_optimizer(config.optimizer, config.learning_rate,
                              schedule=config.lr_schedule,
                              steps_per_epoch=num_train // config.batch_size,
                              epochs=config.epochs, warmup_epochs=config.warmup_epochs,
                              b2=config.adam_b2)


def make_loss(config: RunConfig, model: models.VAE, num_train: int):
  """The training loss of `config`: the (beta-weighted, warmed-up) ELBO or the IWAE bound."""
  if config.objective == "iwae":
    return losses.iwae_loss(model.parts, num_samples=config.iwae_samples,
                            gradient=config.iwae_gradient)
  if config.objective != "elbo":
    raise ValueError(f"objective={config.objective!r}: expected one of {list(OBJECTIVES)}")
  if not config.beta >= 0:
    raise ValueError(f"beta={config.beta}: must be >= 0")
  warmup = losses.kl_warmup(config.kl_warmup_epochs * (num_train // config.batch_size))
  beta = lambda step: config.beta * warmup(step)
  return losses.elbo_loss(model.parts, num_samples=config.num_samples,
                          estimator=config.estimator, beta=beta)


def initial_state(config: RunConfig, model: models.VAE, optimizer, root) -> train.TrainState:
  return train.init_state(models.init_params(model, train.init_key(root)), optimizer)
