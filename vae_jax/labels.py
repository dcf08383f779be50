"""Data with labels, for conditional models: the rows a model is scored on are a
`Batch(x, labels)` (labels `[n]` int32; None for an unconditional model's rows, which
may also be given as the array x alone), and a conditional model's `parts(params, y)`
binds y into its encoder and decoder.

The objectives never see y: `elbo(lambda x: enc(x, y), lambda z: dec(z, y), x, key)`
bounds log p(x|y). Everything that walks a data set in batches (training,
`evaluate`, `ais`, `engine`) slices rows with `take` and binds with `bind`, so the
labels travel wherever the images do.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class Batch:
  """Rows of a data set: x `[n, ...]` and, for a conditional model, their labels `[n]`
  (None: none). A pytree: `jax.tree_util.tree_map` slices both together."""
  x: Any
  labels: Any = None


def as_batch(rows) -> Batch:
  """`rows` as a Batch: a Batch, or an array of x alone."""
  if isinstance(rows, Batch):
    return rows
  if isinstance(rows, (tuple, list)):
    raise ValueError("rows: a tuple; give the array x, or labels.Batch(x, labels) for a "
                     "conditional model")
  return Batch(rows)


def bind(parts_fn, params, rows):
  """(Parts, x) for `rows`: `parts_fn(params)` and x, or for labelled rows the
  conditional model's `parts_fn(params, labels)` and x."""
  rows = as_batch(rows)
  if rows.labels is None:
    return parts_fn(params), rows.x
  return parts_fn(params, rows.labels), rows.x


def binder(parts_fn, params, rows):
  """`bind` for the slices of `rows` (one row, one batch) inside a loop over them:
  unlabelled rows are bound once, here, so the parts' own work (a VampPrior's
  pseudo-inputs through the encoder) stays out of the loop; labelled rows slice by slice."""
  if as_batch(rows).labels is not None:
    return lambda part: bind(parts_fn, params, part)
  parts = parts_fn(params)
  return lambda part: (parts, as_batch(part).x)


def inputs(rows):
  """The model inputs x of `rows`."""
  return as_batch(rows).x


def bound_of(rows) -> str:
  """What a likelihood of `rows` is of: "log p(x)", or "log p(x|y)" for labelled rows."""
  return "log p(x)" if as_batch(rows).labels is None else "log p(x|y)"


def num_rows(rows) -> int:
  """n, the leading size of x `[n, ...]` (and of the labels `[n]`)."""
  return inputs(rows).shape[0]


def take(rows, start: int, stop: int | None = None):
  """Rows start..stop-1 of x, and of the labels with them."""
  return jax.tree_util.tree_map(lambda a: a[start:stop], rows)


def with_labels(h: jax.Array, y_hot: jax.Array | None) -> jax.Array:
  """h `[..., F]` with the one-hot labels appended, `[..., F + K]` (None: h)."""
  if y_hot is None:
    return h
  return jnp.concatenate([h, jnp.broadcast_to(y_hot, h.shape[:-1] + y_hot.shape[-1:])], -1)


MAX_LABEL = 2 ** 31 - 1  # int32's largest


def as_labels(values, source: str) -> np.ndarray:
  """Class labels as stored, checked before any cast: `[n]` integers (or whole-number
  floats), finite, in 0..2^31-1; returned as int32. Raises ValueError, one line naming
  `source` (file and split) and the first bad row."""
  a = np.asarray(values)
  if a.ndim != 1:
    raise ValueError(f"{source}: labels of shape {a.shape}; store one integer label per "
                     f"image, shape [n]")
  if a.dtype.kind not in "iuf":
    raise ValueError(f"{source}: labels of type {a.dtype}; store integer class indices "
                     f"0..K-1")
  if a.dtype.kind == "f":
    with np.errstate(invalid="ignore"):
      bad = ~np.isfinite(a) | (a != np.round(a))
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"{source}: label {a[i].item()!r} (row {i}) is not a whole number; store "
                       f"integer class indices 0..K-1")
  bad = (a < 0) | (a > MAX_LABEL)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"{source}: label {a[i].item()!r} (row {i}) is outside "
                     f"0..{MAX_LABEL}; relabel the classes as 0..K-1")
  return a.astype(np.int32)


def check(labels, images, what: str, num_classes_: int) -> None:
  """Raises ValueError (one line naming `what`) unless `labels` are one int per image in
  [0, num_classes_)."""
  if labels is None:
    raise ValueError(f"conditional=True: the {what} set has no labels; use a data set with "
                     f"labels (mnist, npz with train_labels and test_labels, a folder of class "
                     f"subfolders, tfds with a label feature) or drop --conditional")
  labels = np.asarray(labels)
  if labels.shape != (len(images),):
    raise ValueError(f"conditional=True: the {what} labels have shape {labels.shape}, the "
                     f"images {len(images)} rows; give one label per image")
  bad = (labels < 0) | (labels >= num_classes_)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"conditional=True: {what} label {int(labels[i])} (row {i}) is outside "
                     f"0..{num_classes_ - 1}, the classes the model was built for; relabel "
                     f"the data as 0..K-1")
