"""MNIST and Frey Face as arrays, checked byte for byte, and binarization.

Loaders return host numpy arrays; `binarize` runs on the device from a key.
Every failure raises `DataError` with one line that names the file, what is
wrong with it and how to fix it.
"""

import functools
import gzip
import hashlib
import logging
import os
import pathlib
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import labels as labels_lib

# The official files: name, size in bytes, sha256 (the sums TFDS and torchvision check).
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", 9912422,
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": ("train-labels-idx1-ubyte.gz", 28881,
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": ("t10k-images-idx3-ubyte.gz", 1648877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 4542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
MNIST_COUNTS = {"train": 60000, "test": 10000}
# The mirror TFDS downloads from.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
FREY_FILE = "frey_rawface.mat"
FREY_SHAPE = (28, 20)
BINARIZATIONS = ("dynamic", "fixed", "none")
DATA_ENV = "VAE_JAX_DATA"
FREY_SPLIT_SEED = 0  # the held-out frames: one constant split for every run


class DataError(RuntimeError):
  """A data file is missing, truncated or corrupt; the message says which and how to fix it."""


class Dataset(NamedTuple):
  """Images and labels on the host.

  train, test: `[n, H, W, C]` uint8 levels 0..255 (MNIST) or float32 in [0, 1].
  train_labels, test_labels: `[n]` int32, or None where the data has none.
  image_shape: (H, W, C) of one image.
  """
  train: np.ndarray
  test: np.ndarray
  train_labels: np.ndarray | None
  test_labels: np.ndarray | None
  image_shape: tuple[int, int]

  @property
  def num_classes(self) -> int:
    """K, one more than the largest label of either split (0 without labels): the classes
    a conditional model is built for."""
    if self.train_labels is None or self.test_labels is None:
      return 0
    return int(max(np.max(self.train_labels), np.max(self.test_labels))) + 1


def default_data_root() -> pathlib.Path:
  """`$VAE_JAX_DATA`, else `../shared/data` beside the project root, else the user's
  cache folder: `$XDG_CACHE_HOME/vae_jax`, or ~/.cache/vae_jax."""
  if os.environ.get(DATA_ENV):
    return pathlib.Path(os.environ[DATA_ENV]).expanduser()
  beside = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
  if beside.is_dir():
    return beside
  cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(cache).expanduser() / "vae_jax"


def _sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _read_idx(path: pathlib.Path, magic: int, count: int) -> np.ndarray:
  """The array in one gzip'd IDX file, its header and length checked."""
  fix = f"delete it and run again to download a fresh copy, or copy the official file into {path.parent}"
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (EOFError, OSError, zlib.error) as e:  # BadGzipFile is an OSError
    raise DataError(f"{path}: not a complete gzip file ({e}); {fix}") from None
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: {len(raw)} bytes, shorter than an IDX header; {fix}")
  got_magic = struct.unpack(">I", raw[:4])[0]
  if got_magic != magic:
    raise DataError(f"{path}: bad magic number {got_magic} (expected {magic}); {fix}")
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  if dims[0] != count:
    raise DataError(f"{path}: holds {dims[0]} items, expected {count}; {fix}")
  size = int(np.prod(dims))
  if len(raw) - header != size:
    raise DataError(f"{path}: wrong size: {len(raw) - header} bytes of data for shape "
                    f"{dims} (expected {size}); {fix}")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _download(url: str, dest: pathlib.Path, sha256: str, timeout: float) -> None:
  """Fetches url into dest through a temporary file, renamed once its sha256 checks."""
  dest.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
  try:
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
      out.write(r.read())
    if _sha256(pathlib.Path(tmp)) != sha256:
      raise DataError(f"{url}: downloaded file fails its sha256 check; try again later")
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_mnist(data_dir, *, download: bool = False, timeout: float = 30.0) -> Dataset:
  """MNIST from the four official IDX files in `data_dir`.

  Each file's gzip stream, magic number, item count, size and sha256 are
  checked; a file that fails any check raises `DataError` naming it.

  Args:
    data_dir: a directory holding `train-images-idx3-ubyte.gz` and the rest.
    download: when files are missing, fetch them into `data_dir` (checked
      against their sha256) before reading.
    timeout: seconds for each download.

  Returns:
    A `Dataset` of uint8 images `[60000, 28, 28, 1]` and `[10000, 28, 28, 1]` and
    int32 labels.
  """
  data_dir = pathlib.Path(data_dir).expanduser()
  missing = [name for name, _, _ in MNIST_FILES.values() if not (data_dir / name).is_file()]
  reason = "download off"
  if missing and download:
    try:
      for name, _, sha in MNIST_FILES.values():
        if name in missing:
          logging.info("Downloading %s into %s", name, data_dir)
          _download(MNIST_URL + name, data_dir / name, sha, timeout)
      missing = []
    except (urllib.error.URLError, OSError) as e:
      reason = f"download failed: {getattr(e, 'reason', e)}"
  if missing:
    retry = ("run again on a machine with internet" if download else
             "run with download=True on a machine with internet")
    raise DataError(
        f"MNIST not found: {data_dir} lacks {', '.join(missing)} ({reason}). Copy the four "
        f"official IDX .gz files there (or point data_dir or ${DATA_ENV} at them), {retry}, "
        f"or use data_source=tfds (pip install 'vae-jax[tfds]').")
  arrays = {}
  for part, (name, size, sha) in MNIST_FILES.items():
    path = data_dir / name
    split = part.split("_")[0]
    magic = 2051 if part.endswith("images") else 2049
    arrays[part] = _read_idx(path, magic, MNIST_COUNTS[split])
    if path.stat().st_size != size or _sha256(path) != sha:
      raise DataError(f"{path}: checksum mismatch (sha256 {_sha256(path)[:16]}..., expected "
                      f"{sha[:16]}...): not the official file; replace it with the official one")
  return Dataset(arrays["train_images"][..., None], arrays["test_images"][..., None],
                 arrays["train_labels"].astype(np.int32), arrays["test_labels"].astype(np.int32),
                 (28, 28, 1))


def load_frey_face(path, *, num_test: int = 200) -> Dataset:
  """Frey Face: 1,965 frames of 28x20 grey levels, scaled to [0, 1].

  `num_test` frames chosen at random with a constant key (the same split
  everywhere) are held out; the rest keep their video order.

  Args:
    path: `frey_rawface.mat`, or the directory holding it.
    num_test: frames held out for testing.

  Returns:
    A `Dataset` of float32 images `[1965 - num_test, 28, 20, 1]` and
    `[num_test, 28, 20, 1]`, no labels.
  """
  from scipy import io as sio  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    path = path / FREY_FILE
  if not path.is_file():
    raise DataError(f"Frey Face not found: no {path}. Put {FREY_FILE} (Sam Roweis's data page) "
                    f"there, or pass data_dir / set ${DATA_ENV} to the directory holding it.")
  try:
    mat = sio.loadmat(path)
  except Exception as e:  # scipy raises several types for a bad file.
    raise DataError(f"{path}: not a readable MATLAB file ({e}); replace it with the "
                    f"original {FREY_FILE}") from None
  if "ff" not in mat:
    keys = sorted(k for k in mat if not k.startswith("__"))
    raise DataError(f"{path}: has no variable 'ff' (found {keys}); replace it with the "
                    f"original {FREY_FILE}")
  ff = np.asarray(mat["ff"])
  if ff.ndim != 2 or ff.shape[0] != np.prod(FREY_SHAPE):
    raise DataError(f"{path}: 'ff' has shape {ff.shape}, expected ({np.prod(FREY_SHAPE)}, n)")
  if not 0 < num_test < ff.shape[1]:
    raise DataError(f"{path}: 'ff' holds {ff.shape[1]} frames, but {num_test} are held out "
                    f"for testing: need more than {num_test}; use the original {FREY_FILE}")
  images = unit_interval_images(ff.T, path).reshape((-1,) + FREY_SHAPE + (1,))
  test = np.zeros(len(images), bool)
  test[np.asarray(jax.random.permutation(jax.random.key(FREY_SPLIT_SEED), len(images)))[:num_test]] = True
  return Dataset(images[~test], images[test], None, None, FREY_SHAPE + (1,))


def unit_interval_images(images: np.ndarray, source) -> np.ndarray:
  """uint8 grey levels to float32 in [0, 1]; floats already in [0, 1] as they are.

  Raises:
    DataError, naming `source`: another integer type, floats outside [0, 1],
      NaN or infinite values.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    raise DataError(f"{source}: pixels of type {images.dtype}; expected uint8 grey levels "
                    f"(0..255) or floats in [0, 1]: convert the file")
  bad = ~np.isfinite(images)
  if bad.any():
    raise DataError(f"{source}: {int(bad.sum())} NaN or infinite pixels (the first at index "
                    f"{np.unravel_index(int(np.argmax(bad)), images.shape)}); repair the data")
  lo, hi = float(images.min()), float(images.max())
  if lo < 0.0 or hi > 1.0:
    raise DataError(f"{source}: float pixels between {lo:g} and {hi:g}, outside [0, 1]; scale "
                    f"them to [0, 1] (or store uint8 grey levels)")
  return images.astype(np.float32)


def subset(dataset: Dataset, num_train: int | None, num_test: int | None) -> Dataset:
  """The first `num_train` training and `num_test` test examples (None: all)."""
  cut = lambda a, n: None if a is None else a[:n]
  return Dataset(dataset.train[:num_train], dataset.test[:num_test],
                 cut(dataset.train_labels, num_train), cut(dataset.test_labels, num_test),
                 dataset.image_shape)


def binarize(key: jax.Array, images: jax.Array, method: str) -> jax.Array:
  """Images as float32 model inputs.

  Args:
    key: a `jax.random` key (used by "dynamic" only).
    images: uint8 grey levels or floats in [0, 1], any shape.
    method: "dynamic": a fresh Bernoulli draw of every pixel with its grey
      level as probability; "fixed" or "none": the images as floats in [0, 1]
      ("fixed" data is drawn once beforehand by `fixed_binarization`).

  Returns:
    float32, the same shape.
  """
  x = to_unit_interval(images)
  if method == "dynamic":
    return jax.random.bernoulli(key, x).astype(jnp.float32)
  return x


def binarizer(method: str):
  """`binarize` with `method` fixed: (key, images) -> model inputs, a run's input
  transform; a `labels.Batch`'s images transformed, its labels kept."""
  if method not in BINARIZATIONS:
    raise ValueError(f"binarize={method}: expected one of {list(BINARIZATIONS)}")
  fn = functools.partial(binarize, method=method)

  def transform(key, batch):
    if isinstance(batch, labels_lib.Batch):
      return batch.replace(x=fn(key, batch.x))
    return fn(key, batch)
  return transform


def to_unit_interval(images: jax.Array) -> jax.Array:
  """uint8 grey levels to float32 in [0, 1]; floats pass through."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


# Fixed binarization uses its own constant seed: the same binary data set for every run.
FIXED_BINARIZATION_SEED = 0


def fixed_binarization(images: np.ndarray, stream: int) -> np.ndarray:
  """One Bernoulli draw of every pixel, made with a constant seed: uint8 {0, 255}, same shape.

  `stream` separates the draws of different splits (0 for train, 1 for test).
  """
  key = jax.random.fold_in(jax.random.key(FIXED_BINARIZATION_SEED), stream)
  x = jax.random.bernoulli(key, to_unit_interval(jnp.asarray(images)))
  return np.asarray(x, np.uint8) * 255


def check_labels(dataset: Dataset, num_classes: int) -> None:
  """Raises ValueError (one line) unless both splits have one label per image in
  0..num_classes-1: what a conditional model needs."""
  for labels, what in ((dataset.train_labels, "training"), (dataset.test_labels, "test")):
    if labels is None:  # before any range: K is not known without both splits' labels
      labels_lib.check(None, (), what, 0)
  labels_lib.check(dataset.train_labels, dataset.train, "training", num_classes)
  labels_lib.check(dataset.test_labels, dataset.test, "test", num_classes)


def check_classes(dataset: Dataset) -> None:
  """The classes a conditional model is built for, K = the largest label + 1, against
  the data: refused (one line) where K exceeds the training images (most classes would
  have none); a warning where some class has no training image, or the test set has
  labels the training set never had."""
  k, n = dataset.num_classes, len(dataset.train)
  if k > n:
    raise ValueError(f"conditional=True: the labels make {k} classes (the largest is {k - 1}) "
                     f"for {n} training images; relabel the classes as 0..K-1")
  seen = np.bincount(dataset.train_labels, minlength=k)
  if (seen == 0).any():
    missing = np.flatnonzero(seen == 0)
    logging.warning("conditional: %d of the %d classes have no training image (%s%s); the "
                    "model learns nothing of them", len(missing), k,
                    ", ".join(map(str, missing[:5])), ", ..." if len(missing) > 5 else "")
  unseen = sorted(set(np.unique(dataset.test_labels).tolist()) - set(
      np.flatnonzero(seen).tolist()))
  if unseen:
    logging.warning("conditional: test labels %s%s never occur in the training set",
                    ", ".join(map(str, unseen[:5])), ", ..." if len(unseen) > 5 else "")


def model_inputs(dataset: Dataset, binarize: str, num_classes: int = 0):
  """(train images as stored on the device, test set as float32 model inputs); for a
  conditional model of `num_classes` classes, each a `labels.Batch` with its labels,
  the labels checked (one line naming what is wrong)."""
  if num_classes:
    check_labels(dataset, num_classes)
    train, test = model_inputs(dataset, binarize)
    return (labels_lib.Batch(train, np.asarray(dataset.train_labels, np.int32)),
            labels_lib.Batch(test, jnp.asarray(dataset.test_labels, jnp.int32)))
  if binarize not in BINARIZATIONS:
    raise ValueError(f"binarize={binarize}: expected one of {list(BINARIZATIONS)}")
  train_images, test_images = dataset.train, dataset.test
  if binarize in ("dynamic", "fixed") and dataset.train.dtype == np.uint8:
    # The test set is binarized once, so every epoch and run is scored on the same data.
    test_images = fixed_binarization(test_images, stream=1)
    if binarize == "fixed":
      train_images = fixed_binarization(train_images, stream=0)
  return train_images, to_unit_interval(jnp.asarray(test_images))
