"""Data sets by name: MNIST, Frey Face, your own arrays (.npz), a folder of images, TFDS.

Every source returns a `data.Dataset` of `[n, H, W, C]` images: uint8 levels
0..255, or float32 in [0, 1]. Every bad input raises `data.DataError` with one
line naming the file and the fix. To add a source, write a loader
`fn(options: Options) -> Dataset` and register it in `SOURCES`.
"""

import dataclasses
import pathlib
from typing import NamedTuple

import jax
import numpy as np

from vae_jax import data
from vae_jax import labels as labels_lib
from vae_jax import settings
from vae_jax.data import DataError, Dataset
from vae_jax.settings import setting

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_TEST_FRACTION = 0.1  # held out when a folder has no train/ and test/ subfolders
FOLDER_SPLIT_SEED = 0


class Options(NamedTuple):
  """Where a source finds its data.

  data_dir: the directory of MNIST's files or Frey Face's .mat; for TFDS, its
    `manual_dir` (files a builder cannot download). None: `$VAE_JAX_DATA/<name>`.
  data_path: the .npz file or the image folder.
  tfds_name: a TFDS data set name, e.g. "fashion_mnist".
  tfds_data_dir: where TFDS keeps prepared data (None: its default).
  image_size: resize folder images to this many pixels square (0: keep).
  download: fetch missing MNIST files.
  mnist_source: "idx" (the four official files) or "tfds".
  """
  data_dir: str | None = None
  data_path: str | None = None
  tfds_name: str | None = None
  tfds_data_dir: str | None = None
  image_size: int = 0
  download: bool = False
  mnist_source: str = "idx"


def _mnist(options: Options) -> Dataset:
  data_dir = pathlib.Path(options.data_dir or data.default_data_root() / "mnist").expanduser()
  if options.mnist_source == "tfds":
    return load_tfds("mnist", manual_dir=data_dir, data_dir=options.tfds_data_dir)
  return data.load_mnist(data_dir, download=options.download)


def _frey_face(options: Options) -> Dataset:
  return data.load_frey_face(options.data_dir or data.default_data_root() / "frey")


def _npz(options: Options) -> Dataset:
  if not options.data_path:
    raise DataError("dataset='npz' needs data_path: an .npz file with 'train' and 'test' arrays")
  return load_npz(options.data_path)


def _folder(options: Options) -> Dataset:
  if not options.data_path:
    raise DataError("dataset='folder' needs data_path: a directory of PNG or JPEG images")
  return load_folder(options.data_path, image_size=options.image_size)


def _tfds(options: Options) -> Dataset:
  if not options.tfds_name:
    raise DataError("dataset='tfds' needs tfds_name, e.g. fashion_mnist")
  return load_tfds(options.tfds_name, manual_dir=options.data_dir, data_dir=options.tfds_data_dir)


SOURCES = {"mnist": _mnist, "frey_face": _frey_face, "npz": _npz, "folder": _folder,
           "tfds": _tfds}


def load(name: str, options: Options = Options()) -> Dataset:
  """The data set `name` (a key of `SOURCES`) as `[n, H, W, C]` images."""
  if name not in SOURCES:
    raise ValueError(f"dataset={name!r}: expected one of {list(SOURCES)}"
                     f"{settings.nearest(name, SOURCES)}")
  return SOURCES[name](options)


@dataclasses.dataclass(frozen=True)
class DataOptions(settings.Settings):
  """Where this machine finds a run's data, and how much of it to use: settings of a
  command, not of the run (a resumed run may read its files from elsewhere)."""
  data_dir: str | None = setting(None, "Directory of the data files (default: "
                                 f"${data.DATA_ENV}/<data set>); TFDS's manual_dir.")
  data_source: str = setting("idx", "MNIST from idx: the four official files in --data_dir; "
                             "tfds: tfds.load('mnist') (needs tensorflow).",
                             choices=("idx", "tfds"))
  tfds_data_dir: str | None = setting(None, "Where TFDS keeps prepared data (default: its "
                                      "own, ~/tensorflow_datasets).")
  download: bool = setting(True, "Download missing MNIST files (sha256 checked).")
  train_examples: int = setting(0, "Use only the first N training examples (0: all); for "
                                "quick trials.", lower=0)
  test_examples: int = setting(0, "Use only the first N test examples (0: all).", lower=0)



def load_for(config, options: DataOptions = DataOptions()) -> Dataset:
  """The data set a run's settings name (`config.dataset`, `data_path`, `tfds_name`,
  `image_size`: a `config.RunConfig`), read as `options` say and cut to their sizes."""
  needs = {"npz": ("data_path", "data_path=FILE.npz holding 'train' and 'test' arrays"),
           "folder": ("data_path", "data_path=DIR holding PNG or JPEG images"),
           "tfds": ("tfds_name", "tfds_name, e.g. tfds_name=fashion_mnist")}
  if config.dataset in needs and not getattr(config, needs[config.dataset][0]):
    raise ValueError(f"dataset={config.dataset} needs {needs[config.dataset][1]}")
  dataset = load(config.dataset, Options(
      data_dir=options.data_dir, data_path=config.data_path or None,
      tfds_name=config.tfds_name or None, tfds_data_dir=options.tfds_data_dir,
      image_size=config.image_size, download=options.download,
      mnist_source=options.data_source))
  dataset = data.subset(dataset, options.train_examples or None, options.test_examples or None)
  if getattr(config, "m1_workdir", None):  # M1+M2: the images as a trained M1's latent means
    from vae_jax import semisupervised  # pylint: disable=g-import-not-at-top
    dataset = semisupervised.m1_features(dataset, config.m1_workdir)
  return dataset


def _checked_images(images, source: str) -> np.ndarray:
  """`[n, H, W]` or `[n, H, W, C]` uint8, or floats in [0, 1]: as `[n, H, W, C]`."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise DataError(f"{source}: shape {images.shape}; expected images [n, H, W] or "
                    f"[n, H, W, C]")
  if len(images) == 0:
    raise DataError(f"{source}: holds no images")
  if images.dtype == np.uint8:
    return images
  return data.unit_interval_images(images, source)  # floats checked, other types refused


def load_npz(path) -> Dataset:
  """Your own arrays: an .npz with `train` and `test` images (`train_labels` and
  `test_labels` optional).

  Images are `[n, H, W]` or `[n, H, W, C]`, uint8 levels 0..255 or floats in
  [0, 1]; both splits must have the same image shape and kind.
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise DataError(f"{path}: no such file; pass data_path=FILE.npz holding 'train' and "
                    f"'test' arrays")
  try:
    npz = np.load(path, allow_pickle=False)
    arrays = {k: npz[k] for k in npz.files}
  except Exception as e:  # zipfile, ValueError, OSError: a damaged or foreign file
    raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); write it "
                    f"with numpy.savez(path, train=..., test=...)") from None
  missing = [k for k in ("train", "test") if k not in arrays]
  if missing:
    raise DataError(f"{path}: no array named {' or '.join(map(repr, missing))} (found "
                    f"{sorted(arrays)}); save the images as numpy.savez(path, train=..., test=...)")
  train = _checked_images(arrays["train"], f"{path}['train']")
  test = _checked_images(arrays["test"], f"{path}['test']")
  if train.shape[1:] != test.shape[1:] or train.dtype != test.dtype:
    raise DataError(f"{path}: 'train' is {train.dtype} {train.shape[1:]}, 'test' is "
                    f"{test.dtype} {test.shape[1:]}; store both splits alike")
  try:
    labels = [labels_lib.as_labels(arrays[k], f"{path}['{k}']") if k in arrays else None
              for k in ("train_labels", "test_labels")]
  except ValueError as e:
    raise DataError(str(e)) from None
  return Dataset(train, test, labels[0], labels[1], tuple(train.shape[1:]))


def _image_files(directory: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in directory.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_images(files, image_size: int, what: str) -> np.ndarray:
  """The files as uint8 `[n, H, W, C]`: grey if every file is grey, else RGB."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  arrays, shape = [], None
  for f in tqdm(files, desc=f"reading {what}", unit="image", mininterval=2.0):
    try:
      with Image.open(f) as im:
        im = im.convert("L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB")
        if image_size:
          im = im.resize((image_size, image_size), Image.BILINEAR)
        a = np.asarray(im, np.uint8)
    except Exception as e:  # PIL raises several types for damaged files
      raise DataError(f"{f}: not a readable image ({type(e).__name__}: {e}); repair or remove "
                      f"it") from None
    if shape is None:
      shape = a.shape[:2]
    elif a.shape[:2] != shape:
      raise DataError(f"{f}: {a.shape[1]}x{a.shape[0]} pixels, but {files[0]} has "
                      f"{shape[1]}x{shape[0]}; pass image_size to resize all")
    arrays.append(a)
  if any(a.ndim == 3 for a in arrays):  # some colour: every image as RGB
    arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1) for a in arrays]
  images = np.stack(arrays)
  return images if images.ndim == 4 else images[..., None]


def load_folder(path, *, image_size: int = 0) -> Dataset:
  """A directory of PNG/JPEG files (searched recursively), read once into arrays.

  With `train/` and `test/` subfolders those are the splits; otherwise 10% of the
  files, chosen with a constant key, are held out for testing. Grey-level files
  give C = 1, colour files C = 3. Where every file sits in a subfolder (of the split),
  the subfolders are the classes: the labels are their indices in sorted order
  (`--conditional`).

  Args:
    path: the directory.
    image_size: resize every image to image_size x image_size (0: keep; then every
      image must have the same size).
  """
  path = pathlib.Path(path).expanduser()
  if not path.is_dir():
    raise DataError(f"{path}: not a directory; pass data_path=DIR holding PNG or JPEG images")
  if (path / "train").is_dir() and (path / "test").is_dir():
    roots = {s: path / s for s in ("train", "test")}
    splits = {s: _image_files(path / s) for s in ("train", "test")}
    for s, files in splits.items():
      if not files:
        raise DataError(f"{path / s}: no PNG or JPEG files; add images or remove the "
                        f"train/ and test/ subfolders")
  else:
    files = _image_files(path)
    if len(files) < 2:
      raise DataError(f"{path}: {len(files)} PNG or JPEG files; need at least 2 (train and "
                      f"test)")
    order = np.asarray(jax.random.permutation(jax.random.key(FOLDER_SPLIT_SEED), len(files)))
    num_test = max(1, int(round(len(files) * FOLDER_TEST_FRACTION)))
    test = set(order[:num_test].tolist())
    splits = {"train": [f for i, f in enumerate(files) if i not in test],
              "test": [f for i, f in enumerate(files) if i in test]}
    roots = {"train": path, "test": path}
  train = _read_images(splits["train"], image_size, f"{path} (train)")
  test = _read_images(splits["test"], image_size, f"{path} (test)")
  if train.shape[1:] != test.shape[1:]:
    if train.shape[1:3] != test.shape[1:3]:
      raise DataError(f"{path}: train images are {train.shape[1:3]}, test images "
                      f"{test.shape[1:3]}; pass image_size to resize all")
    train, test = (np.repeat(a, 3, -1) if a.shape[-1] == 1 else a for a in (train, test))
  labels = _class_labels(splits, roots)
  return Dataset(train, test, labels["train"], labels["test"], tuple(train.shape[1:]))


def _class_labels(splits: dict, roots: dict) -> dict:
  """{split: int32 labels}: each file's class, the index of its first subfolder below
  the split's root among all such subfolders sorted by name; None where any file sits
  at a root itself."""
  folders = {s: [f.relative_to(roots[s]).parts[:-1] for f in files] for s, files in splits.items()}
  if not all(parts for names in folders.values() for parts in names):
    return {s: None for s in splits}
  classes = sorted({parts[0] for names in folders.values() for parts in names})
  index = {name: i for i, name in enumerate(classes)}
  return {s: np.asarray([index[parts[0]] for parts in names], np.int32)
          for s, names in folders.items()}


def load_tfds(name: str, *, manual_dir=None, data_dir=None) -> Dataset:
  """Any TFDS image data set with 'train' and 'test' splits, through `tfds.load`.

  Needs tensorflow (`pip install 'vae-jax[tfds]'`). `manual_dir` holds files a
  builder reads instead of downloading (MNIST's four official files work
  offline); `data_dir` is where TFDS keeps the prepared data.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise DataError(f"dataset='tfds' needs tensorflow-datasets and tensorflow ({e}); "
                    f"pip install 'vae-jax[tfds]'") from None
  config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends
    raise DataError(f"tfds_name={name!r}: not a TFDS data set ({str(e).splitlines()[0]})") from None
  splits = list(builder.info.splits) if builder.info.splits else []
  if splits and not {"train", "test"} <= set(splits):
    raise DataError(f"tfds_name={name!r}: has splits {splits}, needs 'train' and 'test'")
  if "image" not in builder.info.features:
    raise DataError(f"tfds_name={name!r}: has no 'image' feature (features: "
                    f"{list(builder.info.features)}); pick an image data set")
  try:
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # no internet, missing manual files
    raise DataError(f"tfds_name={name!r}: could not prepare it ({str(e).splitlines()[0][:300]}); "
                    f"put its files in the manual directory (data_dir) or run once with "
                    f"internet") from None
  train, test = tfds.as_numpy(builder.as_dataset(split=["train", "test"], batch_size=-1))
  label = lambda s, split: (labels_lib.as_labels(s["label"], f"tfds {name}'s {split} labels")
                            if "label" in s else None)
  train_x = _checked_images(train["image"], f"tfds {name} train")
  test_x = _checked_images(test["image"], f"tfds {name} test")
  return Dataset(train_x, test_x, label(train, "train"), label(test, "test"),
                 tuple(train_x.shape[1:]))
