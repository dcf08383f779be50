"""Optimizers and learning-rate schedules, by name: Adam, Adagrad (Kingma &
Welling, 2014), SGD; constant, Burda et al.'s staged decay, warm-up and cosine."""

import optax

OPTIMIZERS = ("adam", "adagrad", "sgd")
SCHEDULES = ("constant", "burda", "warmup_cosine")


def burda_schedule(learning_rate: float, steps_per_epoch: int) -> optax.Schedule:
  """Burda et al. (2016): learning_rate * 10**(-i/7) for 3**i epochs, i = 0..7 (3,280 epochs)."""
  boundaries, epochs = {}, 0
  for i in range(1, 8):
    epochs += 3 ** (i - 1)
    boundaries[epochs * steps_per_epoch] = 10 ** (-1 / 7)
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def learning_rate_schedule(learning_rate: float, *, schedule: str = "constant",
                           steps_per_epoch: int = 1, epochs: int = 1,
                           warmup_epochs: int = 0) -> optax.Schedule:
  """The step size at each step: "constant"; "burda" (`burda_schedule`); or
  "warmup_cosine": linear warm-up over `warmup_epochs`, then a cosine decay to 0 at
  `epochs`."""
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate}: must be > 0")
  if schedule not in SCHEDULES:
    raise ValueError(f"lr_schedule={schedule!r}: expected one of {list(SCHEDULES)}")
  if schedule == "burda":
    return burda_schedule(learning_rate, steps_per_epoch)
  if schedule == "warmup_cosine":
    total = max(1, epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate,
                                              min(warmup_epochs * steps_per_epoch, total - 1),
                                              total, end_value=0.0)
  return optax.constant_schedule(learning_rate)


def make_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                   steps_per_epoch: int = 1, epochs: int = 1, warmup_epochs: int = 0,
                   b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  """Adam (the default), Adagrad (Kingma & Welling, 2014) or plain SGD.

  Args:
    name: "adam", "adagrad" or "sgd".
    learning_rate: the (peak) step size, > 0.
    schedule: "constant"; "burda" (`burda_schedule`); or "warmup_cosine" (see
      `learning_rate_schedule`).
    steps_per_epoch: for schedules counted in epochs.
    epochs, warmup_epochs: the length of the cosine schedule and its warm-up.
    b2: Adam's second-moment decay (0.999 by default; 0.95 trains Burda et
      al.'s VAE to a given bound in fewer epochs, see the burda_2016_fast preset).
    eps: Adam's epsilon (Burda et al. use 1e-4).
  """
  lr = learning_rate_schedule(learning_rate, schedule=schedule, steps_per_epoch=steps_per_epoch,
                              epochs=epochs, warmup_epochs=warmup_epochs)
  if schedule == "constant":
    lr = learning_rate  # a float: optax's states then hold no step count
  if name == "adam":
    return optax.adam(lr, b2=b2, eps=eps)
  if name == "adagrad":
    return optax.adagrad(lr)
  if name == "sgd":
    return optax.sgd(lr)
  raise ValueError(f"optimizer={name!r}: expected one of {list(OPTIMIZERS)}")
