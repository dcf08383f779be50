"""What a run's settings build (vae_jax/recipe.py): the optimizer and its schedules, the
loss with its KL weight, and the training part of an epoch's line."""

import math

import jax
import jax.numpy as jnp
import pytest

from vae_jax import config as C
from vae_jax import recipe as R


def test_warmup_cosine_schedule_peaks_and_ends_at_zero():
  config = C.RunConfig(lr_schedule="warmup_cosine", learning_rate=2e-3, warmup_epochs=2,
                       epochs=10, batch_size=10, optimizer="sgd")
  opt = R.make_optimizer(config, num_train=100)  # 10 steps per epoch
  peak = R.hyperparameters(config, num_train=100)["learning_rate"]  # the epoch's input
  params = {"w": jnp.zeros(())}
  state = opt.init(params)
  rates = []
  for _ in range(100):  # sgd: the update is -lr * gradient
    updates, state = opt.update({"w": jnp.ones(())}, state, params)
    rates.append(-float(updates["w"] * peak))
  assert rates[0] == 0.0 and rates[20] == pytest.approx(2e-3)
  assert rates[60] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 40 / 80)), rel=1e-5)
  assert rates[-1] < 1e-5


def test_the_loss_weights_the_kl_by_beta_and_its_warmup():
  config = C.RunConfig(beta=0.5, kl_warmup_epochs=2, batch_size=10, latent_dim=2,
                       hidden_sizes=(8,))
  model = config.build_model((2, 2, 1))
  loss = jax.jit(R.make_loss(config, model))  # one program for every step
  hparams = R.hyperparameters(config, num_train=50)  # warm-up over 10 steps
  del hparams["learning_rate"]  # the train step's, not the loss's
  params = jax.jit(model.init)(jax.random.key(0))
  x = jnp.ones((3, 2, 2, 1))
  for step, beta in ((0, 0.0), (5, 0.25), (10, 0.5), (99, 0.5)):
    value, m = loss(params, x, jax.random.key(1), step, **hparams)
    assert float(m["beta"]) == pytest.approx(beta)
    assert float(m["objective"]) == pytest.approx(float(m["reconstruction"] - beta * m["kl"]),
                                                  rel=1e-5)
    assert float(value) == pytest.approx(-float(m["objective"]))
    assert float(m["elbo"]) == pytest.approx(float(m["reconstruction"] - m["kl"]), rel=1e-5)


def test_an_epochs_line_names_the_objective_trained_beside_the_elbo():
  summary = lambda record, **settings: R._train_summary(C.RunConfig(**settings))(record)
  record = {"train_elbo": -101.234, "train_objective": -95.5, "train_beta": 0.5}
  assert summary(record, beta=0.5) == "train ELBO -101.23 (objective -95.50, beta 0.5)"
  assert summary({"train_elbo": -101.234, "train_beta": 1.0}) == "train ELBO -101.23"
  assert summary({"train_iwae_bound": -99.0}, objective="iwae",
                 iwae_samples=5) == "train IWAE k=5 -99.00"
