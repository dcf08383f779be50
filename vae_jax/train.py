"""Training: the state, a compiled `train_step`, and a whole epoch as one `lax.scan`
(or, for convolutions on a CPU, a host loop over one compiled step).

Keys: one root key per run. The key of step s is `step_key(root, s)` and the
shuffle of epoch e is `epoch_permutation(root, e, n)`, so every step is a pure
function of (state, data, root) and neither resuming nor cutting the loop into
different calls changes a number.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vae_jax import data as data_lib

OPTIMIZERS = ("adam", "adagrad", "sgd")
SCHEDULES = ("constant", "burda", "warmup_cosine")
# Independent key streams derived from the root key.
_INIT, _SHUFFLE, _STEP, _EVAL = range(4)


class TrainState(NamedTuple):
  """Everything that changes during training (the key chain is derived from `step`)."""
  step: jax.Array  # int32 []
  params: Any
  opt_state: Any


def burda_schedule(learning_rate: float, steps_per_epoch: int) -> optax.Schedule:
  """Burda et al. (2016): learning_rate * 10**(-i/7) for 3**i epochs, i = 0..7 (3,280 epochs)."""
  boundaries, epochs = {}, 0
  for i in range(1, 8):
    epochs += 3 ** (i - 1)
    boundaries[epochs * steps_per_epoch] = 10 ** (-1 / 7)
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def make_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                   steps_per_epoch: int = 1, epochs: int = 1, warmup_epochs: int = 0,
                   b2: float = 0.999) -> optax.GradientTransformation:
  """Adam (the default), Adagrad (Kingma & Welling, 2014) or plain SGD.

  Args:
    name: "adam", "adagrad" or "sgd".
    learning_rate: the (peak) step size, > 0.
    schedule: "constant"; "burda" (`burda_schedule`, with Adam's epsilon 1e-4
      as in Burda et al.); or "warmup_cosine": linear warm-up over
      `warmup_epochs`, then a cosine decay to 0 at `epochs`.
    steps_per_epoch: for schedules counted in epochs.
    epochs, warmup_epochs: the length of the cosine schedule and its warm-up.
    b2: Adam's second-moment decay (0.999 by default; 0.95 trains Burda et
      al.'s VAE to a given bound in fewer epochs, see the burda_2016_fast preset).
  """
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate}: must be > 0")
  if schedule not in SCHEDULES:
    raise ValueError(f"lr_schedule={schedule!r}: expected one of {list(SCHEDULES)}")
  if schedule == "burda":
    lr = burda_schedule(learning_rate, steps_per_epoch)
  elif schedule == "warmup_cosine":
    total = max(1, epochs * steps_per_epoch)
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate,
                                            min(warmup_epochs * steps_per_epoch, total - 1),
                                            total, end_value=0.0)
  else:
    lr = learning_rate
  if name == "adam":
    return optax.adam(lr, b2=b2, eps=1e-4 if schedule == "burda" else 1e-8)
  if name == "adagrad":
    return optax.adagrad(lr)
  if name == "sgd":
    return optax.sgd(lr)
  raise ValueError(f"optimizer={name!r}: expected one of {list(OPTIMIZERS)}")


def init_key(root_key):
  """The key of the initial parameters."""
  return jax.random.fold_in(root_key, _INIT)


def init_state(params, optimizer) -> TrainState:
  """Step 0: `params` and a fresh optimizer state."""
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def step_key(root_key, step):
  """The key of global step `step`."""
  return jax.random.fold_in(jax.random.fold_in(root_key, _STEP), step)


def eval_key(root_key):
  """The key used for every evaluation, so that epochs compare like with like."""
  return jax.random.fold_in(root_key, _EVAL)


def epoch_permutation(root_key, epoch, n: int) -> jax.Array:
  """The data order of epoch `epoch`: a permutation of range(n)."""
  return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(root_key, _SHUFFLE), epoch), n)


def make_train_step(loss_fn, optimizer, *, skip_nonfinite: bool = False,
                    grad_norm: bool | None = None) -> Callable:
  """A pure `train_step(state, x, key) -> (state, metrics)`; jit it or scan it.

  Args:
    loss_fn: (params, x, key, step) -> (scalar loss, dict of scalar metrics),
      e.g. `losses.elbo_loss(model.parts)`; `step` is the state's step counter
      (for schedules such as a KL warm-up).
    optimizer: an optax transformation.
    skip_nonfinite: a step whose loss or gradient is not finite leaves the
      parameters and optimizer state unchanged (the step counter advances).
    grad_norm: report the gradient's global norm ("grad_norm"), and count a
      non-finite gradient as a non-finite step. Default: only with
      `skip_nonfinite`, which needs it. It is one more pass over every gradient
      (a fifth of a step at batch 20 on a CPU); without it a non-finite gradient
      shows in the next step's loss.

  Returns:
    train_step(state, x, key) -> (TrainState, metrics): the loss's metrics,
    "finite" (whether the loss, and with `grad_norm` every gradient, was finite)
    and "grad_norm" where asked for.
  """
  track_norm = skip_nonfinite if grad_norm is None else grad_norm

  def train_step(state: TrainState, x, key):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, x, key, state.step)
    finite = jnp.isfinite(loss)
    if track_norm:
      norm = optax.tree.norm(grads)
      finite = finite & jnp.isfinite(norm)
      metrics = {**metrics, "grad_norm": norm}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if skip_nonfinite:
      params, opt_state = jax.tree_util.tree_map(
          lambda new, old: jnp.where(finite, new, old),
          (params, opt_state), (state.params, state.opt_state))
    metrics = {**metrics, "finite": finite}
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


def make_train_epoch(loss_fn, optimizer, *, binarize: str, skip_nonfinite: bool = False,
                     mesh: Mesh | None = None, grad_norm: bool | None = None,
                     host_loop: bool = False) -> Callable:
  """One epoch as one compiled `lax.scan` over its batches.

  The batches come in order, `[steps, batch, ...]` (see `epoch_batches`: the
  shuffle of `epoch_permutation(root, epoch, n)`, the last partial batch
  dropped), so every step has the same shape and nothing compiles twice.
  Each step's key `step_key(root, state.step)` splits into the binarization
  key and the loss's key. With `mesh`, every batch is sharded over its "data"
  axis (parameters replicated), across processes too, and XLA inserts the
  gradient all-reduce; the random draws do not depend on the sharding.

  Args:
    loss_fn: as for `make_train_step`.
    optimizer: an optax transformation.
    binarize: "dynamic", "fixed" or "none" (see `data.binarize`).
    skip_nonfinite, grad_norm: as for `make_train_step`.
    mesh: a mesh with a "data" axis, or None.
    host_loop: each step its own compiled call from a Python loop instead of
      one scan (same keys, same steps). XLA's CPU backend runs convolutions in
      a loop body 3 to 6 times slower than outside one (jax-ml/jax#12868);
      conv models on a CPU want this. One process only.

  Returns:
    epoch(state, batches `[steps, batch, ...]`, root_key) -> (state, metrics):
    jitted, the state donated, with `.lower(...)` for ahead-of-time compiling.
    Metrics: the means over the epoch's steps of the step metrics, `steps`,
    `nonfinite_steps` (a count) and `first_nonfinite_step` (-1 if none).
  """
  train_step = make_train_step(loss_fn, optimizer, skip_nonfinite=skip_nonfinite,
                               grad_norm=grad_norm)
  batch_sharding = None if mesh is None else NamedSharding(mesh, P("data"))

  def body(state, batch, stream):
    data_key, sample_key = jax.random.split(jax.random.fold_in(stream, state.step))
    x = data_lib.binarize(data_key, batch, binarize)
    if batch_sharding is not None:
      x = jax.lax.with_sharding_constraint(x, batch_sharding)
    return train_step(state, x, sample_key)

  if host_loop:
    if jax.process_count() > 1:
      raise ValueError("host_loop=True runs on one process; leave it False with several")
    return _HostLoopEpoch(jax.jit(body, donate_argnums=0), jax.jit(_summarize))

  def epoch_fn(state: TrainState, batches, root_key):
    stream = jax.random.fold_in(root_key, _STEP)  # step_key's first fold, out of the loop
    state, metrics = jax.lax.scan(lambda s, b: body(s, b, stream), state, batches)
    return state, _summarize(state.step, metrics)

  return jax.jit(epoch_fn, donate_argnums=0)


def _summarize(end_step, metrics: dict) -> dict:
  """An epoch's metrics from its steps' (each `[steps]`); `end_step`: the step after it."""
  metrics = dict(metrics)
  finite = metrics.pop("finite")
  first_step = end_step - finite.shape[0]
  summary = {k: jnp.mean(v) for k, v in metrics.items()}
  summary["steps"] = jnp.asarray(finite.shape[0], jnp.int32)
  summary["nonfinite_steps"] = jnp.sum(~finite)
  summary["first_nonfinite_step"] = jnp.where(
      jnp.all(finite), -1, first_step + jnp.argmin(finite))
  return summary


class _HostLoopEpoch:
  """`make_train_epoch(host_loop=True)`: the epoch as a Python loop over one compiled
  step, the same signature and metrics as the scanned epoch."""

  def __init__(self, step, summarize):
    self._step, self._summarize = step, summarize

  def __call__(self, state, batches, root_key):
    stream = jax.random.fold_in(root_key, _STEP)
    steps = []
    for i in range(batches.shape[0]):
      state, metrics = self._step(state, batches[i], stream)
      steps.append(metrics)
    stacked = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *steps)
    return state, self._summarize(state.step, stacked)

  def lower(self, state, batches, root_key):
    """Lowers one step: `.compile()` gives an epoch with `memory_analysis()` of a step."""
    return _LoweredHostLoop(
        self._step.lower(state, batches[0], jax.random.fold_in(root_key, _STEP)), self)


class _LoweredHostLoop:
  def __init__(self, lowered, epoch: _HostLoopEpoch):
    self._lowered, self._epoch = lowered, epoch

  def compile(self) -> _HostLoopEpoch:
    compiled = self._lowered.compile()
    epoch = _HostLoopEpoch(compiled, self._epoch._summarize)
    epoch.memory_analysis = compiled.memory_analysis
    return epoch


def epoch_batches(images: np.ndarray, root_key, epoch: int, batch_size: int,
                  mesh: Mesh | None = None) -> jax.Array:
  """The batches of epoch `epoch` in order, `[n // batch_size, batch_size, ...]`.

  The order is `epoch_permutation(root_key, epoch, n)` and the last partial
  batch is dropped. Every process computes the same global order from the
  same key, then gathers and places only its own share of every batch (its
  columns of the "data" axis), so a host holds n / num_processes examples on
  its devices and the numbers do not depend on the number of processes.

  Args:
    images: `[n, ...]` host array, the whole training set.
    root_key, epoch: the run's root key and the epoch.
    batch_size: the global batch size (a multiple of the mesh's devices).
    mesh: a mesh with a "data" axis; None places everything on the default device.
  """
  n = images.shape[0]
  steps = n // batch_size
  order = np.asarray(epoch_permutation(root_key, epoch, n))[:steps * batch_size]
  order = order.reshape(steps, batch_size)
  shape = (steps, batch_size) + images.shape[1:]
  if mesh is None:
    return jnp.asarray(images[order])
  sharding = NamedSharding(mesh, P(None, "data"))
  per_process = batch_size // jax.process_count()
  mine = order[:, jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
  return jax.make_array_from_process_local_data(sharding, images[mine], shape)


def local_copy(tree):
  """Each array of `tree` as this process's own replica: what host-side code
  (pictures, one-process evaluation) can compute with. Needs replicated arrays."""
  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return a.addressable_data(0)
    return a
  return jax.tree_util.tree_map(one, tree)


def any_process(flag: bool) -> bool:
  """Whether `flag` holds on any process: so that every process stops at the same epoch."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def replicate(tree, mesh: Mesh | None):
  """Places every array of `tree` on every device of `mesh` (no-op without one)."""
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, P()))


def data_mesh(devices=None) -> Mesh:
  """A one-axis mesh named "data" over `devices` (default: all devices, all hosts)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(devices, ("data",))
