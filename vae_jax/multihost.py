"""Several processes (and devices) as one run: the data mesh, replicated state,
each process's own copy, and agreement between processes. With one process every
helper is the identity or a no-op."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


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


def barrier(name: str) -> None:
  """Waits for every process (nothing to wait for with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def coordination_client():
  """JAX's client of the coordination service's key-value store, once
  `jax.distributed.initialize` has run (else None). It lives in `jax._src.distributed`,
  not in JAX's public API: this is the one place that reaches into it, and
  tests/test_multihost.py fails loudly when JAX moves it."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0; the only one alone)."""
  return jax.process_index() == 0
