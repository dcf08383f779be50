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

from vae_jax import labels


# Independent key streams derived from the root key.
_INIT, _SHUFFLE, _STEP, _EVAL = range(4)


class TrainState(NamedTuple):
  """Everything that changes during training (the key chain is derived from `step`)."""
  step: jax.Array  # int32 []
  params: Any
  opt_state: Any


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
    train_step(state, x, key, hparams=None) -> (TrainState, metrics): the loss's
    metrics, "finite" (whether the loss, and with `grad_norm` every gradient, was
    finite) and "grad_norm" where asked for. `hparams` (a dict of scalars, traced:
    changing a value compiles nothing new): "learning_rate" multiplies the optimizer's
    updates (build the optimizer with a peak step size of 1, see
    `optimizers.make_optimizer`); every other entry goes to `loss_fn` as a keyword
    argument (e.g. `losses.elbo_loss`'s beta).
  """
  track_norm = skip_nonfinite if grad_norm is None else grad_norm

  def train_step(state: TrainState, x, key, hparams=None):
    hparams = dict(hparams or {})
    scale = hparams.pop("learning_rate", None)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, x, key, state.step, **hparams)
    finite = jnp.isfinite(loss)
    if track_norm:
      norm = optax.tree.norm(grads)
      finite = finite & jnp.isfinite(norm)
      metrics = {**metrics, "grad_norm": norm}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    if scale is not None:  # every optax update is linear in its step size
      updates = jax.tree_util.tree_map(lambda u: (u * scale).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    if skip_nonfinite:
      params, opt_state = jax.tree_util.tree_map(
          lambda new, old: jnp.where(finite, new, old),
          (params, opt_state), (state.params, state.opt_state))
    metrics = {**metrics, "finite": finite}
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


def make_train_epoch(loss_fn, optimizer, *, transform: Callable, skip_nonfinite: bool = False,
                     mesh: Mesh | None = None, grad_norm: bool | None = None,
                     host_loop: bool = False, replicas: bool = False) -> Callable:
  """One epoch as one compiled `lax.scan` over its batches.

  The batches come in order, `[steps, batch, ...]` (see `epoch_batches`: the
  shuffle of `epoch_permutation(root, epoch, n)`, the last partial batch
  dropped), so every step has the same shape and nothing compiles twice.
  Each step's key `step_key(root, state.step)` splits into the input
  transform's key (the binarization noise) and the loss's key. With `mesh`,
  every batch is sharded over its "data" axis (parameters replicated), across
  processes too, and XLA inserts the gradient all-reduce; the random draws do
  not depend on the sharding.

  Args:
    loss_fn: as for `make_train_step`.
    optimizer: an optax transformation.
    transform: (key, batch of stored images) -> model inputs, e.g.
      `functools.partial(data.binarize, method="dynamic")` (a `config.Recipe`'s).
    skip_nonfinite, grad_norm: as for `make_train_step`.
    mesh: a mesh with a "data" axis, or None.
    host_loop: each step its own compiled call from a Python loop instead of
      one scan (same keys, same steps). XLA's CPU backend runs convolutions in
      a loop body 3 to 6 times slower than outside one (jax-ml/jax#12868);
      conv models on a CPU want this. One process only.
    replicas: the state, the batches and the root key carry a leading axis of N
      replicas (`config.initial_state` of `[N]` roots), trained as one vmapped
      epoch; replica r's numbers are those of its root alone. One device.

  Returns:
    epoch(state, batches `[steps, batch, ...]`, root_key, hparams=None) -> (state,
    metrics): jitted, the state donated, with `.lower(...)` for ahead-of-time
    compiling; `hparams` as for `make_train_step` (inputs of the program, shared by
    replicas).
    Metrics: the means over the epoch's steps of the step metrics, `steps`,
    `nonfinite_steps` (a count) and `first_nonfinite_step` (-1 if none).
  """
  train_step = make_train_step(loss_fn, optimizer, skip_nonfinite=skip_nonfinite,
                               grad_norm=grad_norm)
  if replicas and (host_loop or (mesh is not None and mesh.size > 1)):
    raise ValueError("replicas train as one vmapped epoch on one device, not a host loop")
  batch_sharding = None if mesh is None or replicas else NamedSharding(mesh, P("data"))

  def body(state, batch, stream, hparams=None):
    data_key, sample_key = jax.random.split(jax.random.fold_in(stream, state.step))
    x = transform(data_key, batch)
    if batch_sharding is not None:
      x = jax.lax.with_sharding_constraint(x, batch_sharding)
    return train_step(state, x, sample_key, hparams)

  if host_loop:
    if jax.process_count() > 1:
      raise ValueError("host_loop=True runs on one process; leave it False with several")
    return _HostLoopEpoch(jax.jit(body, donate_argnums=0), jax.jit(_summarize))

  def epoch_fn(state: TrainState, batches, root_key, hparams=None):
    stream = jax.random.fold_in(root_key, _STEP)  # step_key's first fold, out of the loop
    state, metrics = jax.lax.scan(lambda s, b: body(s, b, stream, hparams), state, batches)
    return state, _summarize(state.step, metrics)

  if not replicas:
    return jax.jit(epoch_fn, donate_argnums=0)
  each = jax.vmap(epoch_fn, in_axes=(0, 0, 0, None))  # the hyperparameters are shared

  def replicas_epoch_fn(state: TrainState, batches, root_key, hparams=None):
    return each(state, batches, root_key, hparams)
  return jax.jit(replicas_epoch_fn, donate_argnums=0)


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

  def __call__(self, state, batches, root_key, hparams=None):
    stream = jax.random.fold_in(root_key, _STEP)
    steps = []
    for i in range(labels.num_rows(batches)):
      state, metrics = self._step(state, _step_batch(batches, i), stream, hparams)
      steps.append(metrics)
    stacked = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *steps)
    return state, self._summarize(state.step, stacked)

  def lower(self, state, batches, root_key, hparams=None):
    """Lowers one step: `.compile()` gives an epoch with `memory_analysis()` of a step."""
    return _LoweredHostLoop(
        self._step.lower(state, _step_batch(batches, 0), jax.random.fold_in(root_key, _STEP),
                         hparams),
        self)


def _step_batch(batches, i: int):
  """Step i's batch of an epoch's `[steps, batch, ...]` (images, or images and labels)."""
  return jax.tree_util.tree_map(lambda a: a[i], batches)


class _LoweredHostLoop:
  def __init__(self, lowered, epoch: _HostLoopEpoch):
    self._lowered, self._epoch = lowered, epoch

  def compile(self) -> _HostLoopEpoch:
    compiled = self._lowered.compile()
    epoch = _HostLoopEpoch(compiled, self._epoch._summarize)
    epoch.memory_analysis = compiled.memory_analysis
    return epoch


def epoch_batches(images: np.ndarray, root_key, epoch: int, batch_size: int,
                  mesh: Mesh | None = None, labelled: tuple[int, int] = (0, 0)) -> jax.Array:
  """The batches of epoch `epoch` in order, `[n // batch_size, batch_size, ...]`.

  The order is `epoch_permutation(root_key, epoch, n)` and the last partial
  batch is dropped. Every process computes the same global order from the
  same key, then gathers and places only its own share of every batch (its
  columns of the "data" axis), so a host holds n / num_processes examples on
  its devices and the numbers do not depend on the number of processes.

  Args:
    images: `[n, ...]` host array, the whole training set; or a `labels.Batch` of the
      images and their labels `[n]` for a conditional model, batched together.
    root_key, epoch: the run's root key and the epoch; `[N]` root keys of replicas give
      each replica's batches, `[N, steps, batch_size, ...]` (one device).
    batch_size: the global batch size (a multiple of the mesh's devices).
    mesh: a mesh with a "data" axis; None places everything on the default device.
    labelled: (N, M) for semi-supervised learning (`semisupervised`): every row joins
      the batches with its label hidden, and each batch gains M rows of the N that keep
      theirs (drawn class-balanced by the root key), `[steps, batch_size + M, ...]`.
      (0, 0): every label as stored.
  """
  if root_key.ndim:
    replicas = [epoch_batches(images, k, epoch, batch_size, labelled=labelled)
                for k in root_key]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *replicas)
  n = labels.num_rows(images)
  steps = n // batch_size
  order = np.asarray(epoch_permutation(root_key, epoch, n))[:steps * batch_size]
  order = order.reshape(steps, batch_size)
  if labelled[0]:
    from vae_jax import semisupervised  # pylint: disable=g-import-not-at-top
    images, order = semisupervised.mixed_order(images, order, root_key, epoch, *labelled)
  width = order.shape[1]
  if mesh is None:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a[order]), images)
  sharding = NamedSharding(mesh, P(None, "data"))
  per_process = width // jax.process_count()
  mine = order[:, jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
  return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(
      sharding, a[mine], (steps, width) + a.shape[1:]), images)
