"""What a run's settings build for the runner (`Recipe`): the model, the loss, the
optimizer, the input transform, the loop's actions and the extra metrics; and its
initial state. `config.py` declares and checks the settings; this module only builds.
"""

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vae_jax import data
from vae_jax import distributions
from vae_jax import evaluators
from vae_jax import hooks
from vae_jax import losses
from vae_jax import optimizers
from vae_jax import semisupervised
from vae_jax import trackers
from vae_jax import train
from vae_jax.config import OBJECTIVES, Model, RunConfig


class MemoryKnob(NamedTuple):
  """The setting that scales a training step's memory, and its value."""
  setting: str
  value: int

  def __str__(self) -> str:
    return f"{self.setting}={self.value}"


class LoopPolicy(NamedTuple):
  """How the training loop runs: what the runner needs of the settings, read here once."""
  epochs: int  # in all, counting resumed ones
  batch_size: int
  keep_checkpoints: int
  skip_nonfinite: bool  # skip (and count) non-finite steps instead of stopping
  grad_norm: bool  # compute the gradient's global norm each step
  labelled: tuple = (0, 0)  # (kept labels, labelled rows a batch): `train.epoch_batches`


class Recipe(NamedTuple):
  """What a run is made of, built once from its settings and handed to the loop."""
  model: Model
  loss: losses.LossFn
  optimizer: optax.GradientTransformation
  transform: Callable  # (key, batch of stored images) -> model inputs
  host_loop: bool  # train step by step from Python (XLA's CPU convolutions, jax#12868)
  extra_metrics: Callable[[dict], dict]  # an evaluated epoch's record -> more entries
  memory_knob: MemoryKnob  # the setting that scales a step's memory
  policy: LoopPolicy
  root: jax.Array  # the run's root key, or each replica's `[seeds]` (`RunConfig.root_keys`)
  inputs: Callable  # Dataset -> (stored training images, test model inputs), with labels
  num_classes: int  # a conditional model's classes (0: not conditional)
  hparams: dict  # the epoch's traced inputs (`train.make_train_step`): learning_rate, beta, ...
  evaluate: Callable  # (params, test_x, key) -> {"test_elbo", ...}: the eval_methods' metrics
  hooks: tuple  # the loop's periodic actions, called after every epoch (`hooks`)
  train_summary: Callable[[dict], str]  # an epoch's record -> its log line's training part


def _train_summary(config: RunConfig) -> Callable[[dict], str]:
  """The training part of an epoch's log line. "train ELBO" is the ELBO itself; where
  the run trains another objective (beta != 1, a KL warm-up, the IWAE bound) that one
  is shown beside it under its own name."""
  def summary(record: dict) -> str:
    if "train_iwae_bound" in record:
      return f"train IWAE k={config.iwae_samples} {record['train_iwae_bound']:.2f}"
    text = f"train ELBO {record['train_elbo']:.2f}"
    if record.get("train_beta", 1.0) != 1.0:
      text += f" (objective {record['train_objective']:.2f}, beta {record['train_beta']:.3g})"
    return text
  return summary


def build(config: RunConfig, image_shape, num_train: int, model: Model | None = None,
          num_classes: int = 0) -> Recipe:
  """The `Recipe` of `config` for images of `image_shape` and `num_train` training
  examples of `num_classes` classes (what a conditional model is built for; 0: none);
  `model` (any `Model`) replaces the one `config.model` names."""
  num_classes = num_classes if config.labelled else 0
  model = config.build_model(image_shape, num_classes) if model is None else model
  conv_on_cpu = (config.builds("convolutions") and jax.default_backend() == "cpu"
                 and jax.process_count() == 1)
  schedule = optimizers.learning_rate_schedule(
      config.learning_rate, schedule=config.lr_schedule,
      steps_per_epoch=num_train // config.batch_size, epochs=config.epochs,
      warmup_epochs=config.warmup_epochs)
  dims = math.prod(image_shape)

  def extra(record: dict) -> dict:
    out = {"learning_rate": float(schedule(max(record["step"] - 1, 0)))}  # its last step's
    if config.likelihood == "discretized_logistic":  # 8-bit data: the papers' unit
      out["test_bits_per_dim"] = float(distributions.bits_per_dim(record["test_elbo"], dims))
    return out
  knob = (MemoryKnob("iwae_samples", config.iwae_samples) if config.objective == "iwae"
          else MemoryKnob("num_samples", config.num_samples))
  policy = LoopPolicy(config.epochs, config.batch_size, config.keep_checkpoints,
                      config.skip_nonfinite, config.log_grad_norm or config.skip_nonfinite,
                      (config.labelled_examples, config.labelled_batch_size)
                      if config.labelled_examples else (0, 0))
  # A semi-supervised model is scored by its test error too.
  methods = evaluators.during_training(
      config.eval_methods + (("classification",) if config.builds("semi_supervised") else ()),
      config)
  return Recipe(model, make_loss(config, model), make_optimizer(config, num_train),
                semisupervised.draw_features if config.m1_workdir
                else data.binarizer(config.binarize), conv_on_cpu,
                extra, knob, policy, config.root_keys(),
                functools.partial(data.model_inputs, binarize=config.binarize,
                                  num_classes=num_classes),
                num_classes, hyperparameters(config, num_train),
                functools.partial(methods, model),
                (hooks.Evaluation(config.eval_every), hooks.Progress(config.eval_every))
                + trackers.make(config.tracker, dataclasses.asdict(config))
                + ((hooks.EarlyStopping(config.early_stopping_patience,
                                        config.early_stopping_metric),)
                   if config.early_stopping_patience else ()),
                _train_summary(config))


def make_optimizer(config: RunConfig, num_train: int) -> optax.GradientTransformation:
  """The optimizer of `config` at a peak step size of 1: the train step multiplies its
  updates by `hyperparameters(config)["learning_rate"]`, an input of the compiled epoch."""
  return optimizers.make_optimizer(config.optimizer, 1.0,
                                   schedule=config.lr_schedule,
                                   steps_per_epoch=num_train // config.batch_size,
                                   epochs=config.epochs, warmup_epochs=config.warmup_epochs,
                                   b2=config.adam_b2, eps=config.adam_eps)


def make_loss(config: RunConfig, model: Model) -> losses.LossFn:
  """The training loss of `config`: the ELBO (its beta and KL warm-up come from
  `hyperparameters`), the IWAE bound, or a semi-supervised model's J^alpha."""
  if config.builds("semi_supervised"):
    return semisupervised.m2_loss(model, alpha=config.alpha, num_samples=config.num_samples,
                                  estimator=config.estimator,
                                  labelled_rows=config.labelled_batch_size
                                  if config.labelled_examples else 0)
  if config.objective == "iwae":
    return losses.iwae_loss(model.parts, num_samples=config.iwae_samples,
                            gradient=config.iwae_gradient)
  if config.objective != "elbo":
    raise ValueError(f"objective={config.objective!r}: expected one of {list(OBJECTIVES)}")
  return losses.elbo_loss(model.parts, num_samples=config.num_samples,
                          estimator=config.estimator)


def hyperparameters(config: RunConfig, num_train: int) -> dict:
  """The settings that enter the compiled epoch as inputs, not constants, so that runs
  differing only in them (a sweep over beta or the learning rate) share one program:
  the peak learning rate, and for the ELBO beta and the KL warm-up's length in steps."""
  out = {"learning_rate": jnp.float32(config.learning_rate)}
  if config.objective == "elbo" and not config.builds("semi_supervised"):
    out["beta"] = jnp.float32(config.beta)
    steps_per_epoch = num_train // config.batch_size
    out["kl_warmup_steps"] = jnp.int32(config.kl_warmup_epochs * steps_per_epoch)
  return out


def initial_state(model: Model, optimizer, root) -> train.TrainState:
  """Step 0 from `root`; from a `[N]` array of roots, N replicas (each leaf `[N, ...]`),
  replica r's the same as from root r alone."""
  one = lambda key: train.init_state(model.init(train.init_key(key)), optimizer)
  return jax.vmap(one)(root) if root.ndim else one(root)
