"""Optimizers and schedules by name: the schedules' shapes, and the fact the compiled
epoch relies on: every optimizer's update is linear in its step size."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import optimizers


def _rates(opt, steps):
  """The step size of each of `steps` SGD steps on a gradient of 1."""
  params = {"w": jnp.zeros(())}
  state, out = opt.init(params), []
  for _ in range(steps):
    updates, state = opt.update({"w": jnp.ones(())}, state, params)
    out.append(-float(updates["w"]))
  return out


def test_warmup_cosine_peaks_and_ends_at_zero():
  rates = _rates(optimizers.make_optimizer("sgd", 2e-3, schedule="warmup_cosine",
                                           steps_per_epoch=10, epochs=10, warmup_epochs=2), 100)
  assert rates[0] == 0.0 and rates[20] == pytest.approx(2e-3)
  assert rates[60] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 40 / 80)), rel=1e-5)
  assert rates[-1] < 1e-5


def test_burda_schedule_drops_by_10_to_the_minus_1_7_at_each_stage_end():
  lr = optimizers.burda_schedule(1e-3, steps_per_epoch=2)
  ends = np.cumsum([3 ** i for i in range(7)])  # epochs 1, 4, 13, ...
  for i, end in enumerate(ends):
    assert float(lr(2 * end - 1)) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-5)
    assert float(lr(2 * end)) == pytest.approx(1e-3 * 10 ** (-(i + 1) / 7), rel=1e-5)


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS)
@pytest.mark.parametrize("schedule", optimizers.SCHEDULES)
def test_every_update_is_its_step_size_times_the_update_at_step_size_one(name, schedule):
  """So the train step may build the optimizer at a peak of 1 and multiply by the
  learning rate, an input of the compiled epoch (`train.make_train_step`'s hparams)."""
  kwargs = dict(schedule=schedule, steps_per_epoch=3, epochs=4, warmup_epochs=1)
  lr, one = optimizers.make_optimizer(name, 3e-4, **kwargs), optimizers.make_optimizer(
      name, 1.0, **kwargs)
  params = {"w": jnp.arange(3.0)}
  grads = [{"w": jnp.asarray(np.random.default_rng(i).normal(size=3), jnp.float32)}
           for i in range(6)]
  s_lr, s_one = lr.init(params), one.init(params)
  for g in grads:
    u_lr, s_lr = lr.update(g, s_lr, params)
    u_one, s_one = one.update(g, s_one, params)
    np.testing.assert_allclose(u_lr["w"], 3e-4 * u_one["w"], rtol=1e-6, atol=1e-12)


def test_a_constant_step_size_keeps_no_step_count_and_bad_names_are_one_line():
  state = optimizers.make_optimizer("adam", 1e-3).init({"w": jnp.zeros(2)})
  assert not any("ScaleByScheduleState" in type(s).__name__ for s in state)
  with pytest.raises(ValueError, match=r"optimizer='rmsprop': expected one of \['adam'"):
    optimizers.make_optimizer("rmsprop", 1e-3)
  with pytest.raises(ValueError, match=r"lr_schedule='step': expected one of"):
    optimizers.learning_rate_schedule(1e-3, schedule="step")
  with pytest.raises(ValueError, match=r"learning_rate=0: must be > 0"):
    optimizers.learning_rate_schedule(0)
  assert isinstance(optimizers.make_optimizer("adagrad", 0.1), optax.GradientTransformation)
