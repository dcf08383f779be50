"""Data sets by name: your own arrays (.npz), image folders and TFDS load what they
should, and each bad input gets one line naming its file."""

import functools
import numpy as np
import pytest
from PIL import Image

from vae_jax import data
from vae_jax import datasets


def _images(n, shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def test_npz_loads_uint8_and_float_images(tmp_path):
  train, test = _images(30, (8, 6)), _images(10, (8, 6), 1)
  np.savez(tmp_path / "grey.npz", train=train, test=test, train_labels=np.arange(30))
  d = datasets.load("npz", datasets.Options(data_path=str(tmp_path / "grey.npz")))
  assert d.train.shape == (30, 8, 6, 1) and d.test.shape == (10, 8, 6, 1)
  assert d.train.dtype == np.uint8 and d.image_shape == (8, 6, 1)
  np.testing.assert_array_equal(d.train[..., 0], train)
  assert d.train_labels.dtype == np.int32 and d.test_labels is None
  colour = _images(12, (4, 4, 3)).astype(np.float64) / 255.0
  np.savez(tmp_path / "colour.npz", train=colour, test=colour[:3])
  d = datasets.load_npz(tmp_path / "colour.npz")
  assert d.train.dtype == np.float32 and d.image_shape == (4, 4, 3)
  assert 0.0 <= d.train.min() and d.train.max() <= 1.0
  np.testing.assert_allclose(d.test, colour[:3], rtol=1e-6)


@pytest.mark.parametrize("arrays,message", [
    (None, "no such file"),
    (dict(train=_images(3, (4, 4))), "no array named 'test'"),
    (dict(train=_images(3, (4,)), test=_images(3, (4,))), r"shape \(3, 4\); expected images"),
    (dict(train=np.ones((3, 4, 4), np.int64), test=np.ones((3, 4, 4), np.int64)),
     "pixels of type int64"),
    (dict(train=np.full((3, 4, 4), 2.0), test=np.full((3, 4, 4), 0.5)), "outside \\[0, 1\\]"),
    (dict(train=np.full((3, 4, 4), np.nan), test=np.full((3, 4, 4), 0.5)), "NaN or infinite"),
    (dict(train=_images(3, (4, 4)), test=_images(3, (5, 4))), "store both splits alike"),
    (dict(train=_images(0, (4, 4)), test=_images(3, (4, 4))), "holds no images"),
])
def test_npz_errors_name_the_file(tmp_path, arrays, message):
  path = tmp_path / "d.npz"
  if arrays is not None:
    np.savez(path, **arrays)
  with pytest.raises(data.DataError, match=message) as e:
    datasets.load_npz(path)
  assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_npz_that_is_not_an_npz_is_named(tmp_path):
  path = tmp_path / "d.npz"
  path.write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(data.DataError, match="not a readable .npz file") as e:
    datasets.load_npz(path)
  assert str(path) in str(e.value)


def _write_pngs(directory, images, mode="L"):
  directory.mkdir(parents=True, exist_ok=True)
  for i, a in enumerate(images):
    Image.fromarray(a, mode=mode).save(directory / f"{i:03d}.png")


def test_folder_splits_with_a_constant_key_and_keeps_every_image(tmp_path):
  images = _images(40, (8, 8))
  _write_pngs(tmp_path / "imgs" / "class_a", images[:20])
  _write_pngs(tmp_path / "imgs" / "class_b", images[20:])
  d = datasets.load_folder(tmp_path / "imgs")
  assert d.train.shape == (36, 8, 8, 1) and d.test.shape == (4, 8, 8, 1)
  assert d.train.dtype == np.uint8
  # PNG is lossless: the two splits together are exactly the images written.
  got = np.concatenate([d.train, d.test])[..., 0]
  assert sorted(map(bytes, got)) == sorted(map(bytes, images))
  again = datasets.load_folder(tmp_path / "imgs")
  np.testing.assert_array_equal(again.test, d.test)
  # The subfolders are the classes (sorted by name): each image keeps its own.
  label_of = {bytes(a): int(i >= 20) for i, a in enumerate(images)}
  for split, labels in ((d.train, d.train_labels), (d.test, d.test_labels)):
    assert labels.dtype == np.int32
    assert list(labels) == [label_of[bytes(a)] for a in split[..., 0]]
  assert d.num_classes == 2


def test_folder_classes_are_shared_by_the_train_and_test_subfolders(tmp_path):
  for split, n in (("train", 6), ("test", 3)):
    for c in ("zebra", "ant"):
      _write_pngs(tmp_path / "f" / split / c, _images(n, (4, 4)))
  _write_pngs(tmp_path / "f" / "test" / "bee", _images(1, (4, 4)))  # a class train lacks
  d = datasets.load_folder(tmp_path / "f")
  assert sorted(d.train_labels) == [0] * 6 + [2] * 6  # ant 0, bee 1, zebra 2
  assert sorted(d.test_labels) == [0] * 3 + [1] + [2] * 3 and d.num_classes == 3


def test_folder_with_train_and_test_subfolders_colour_and_resize(tmp_path):
  _write_pngs(tmp_path / "f" / "train", _images(6, (10, 12, 3)), mode="RGB")
  _write_pngs(tmp_path / "f" / "test", _images(2, (10, 12, 3), 1), mode="RGB")
  d = datasets.load("folder", datasets.Options(data_path=str(tmp_path / "f"), image_size=8))
  assert d.train.shape == (6, 8, 8, 3) and d.test.shape == (2, 8, 8, 3)
  assert d.image_shape == (8, 8, 3)
  d = datasets.load_folder(tmp_path / "f")
  assert d.image_shape == (10, 12, 3)
  assert d.train_labels is None and d.num_classes == 0  # files at the splits' roots


def test_folder_errors_name_the_file(tmp_path):
  with pytest.raises(data.DataError, match="not a directory"):
    datasets.load_folder(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(data.DataError, match="0 PNG or JPEG files"):
    datasets.load_folder(tmp_path / "empty")
  _write_pngs(tmp_path / "bad", _images(5, (8, 8)))
  (tmp_path / "bad" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  with pytest.raises(data.DataError, match="002.png: not a readable image"):
    datasets.load_folder(tmp_path / "bad")
  _write_pngs(tmp_path / "sizes", _images(4, (8, 8)))
  Image.fromarray(_images(1, (9, 8))[0]).save(tmp_path / "sizes" / "004.png")
  with pytest.raises(data.DataError, match="004.png: 8x9 pixels.*image_size"):
    datasets.load_folder(tmp_path / "sizes")
  assert datasets.load_folder(tmp_path / "sizes", image_size=8).image_shape == (8, 8, 1)


def test_unknown_source_and_missing_options():
  with pytest.raises(ValueError, match="dataset='cifar'"):
    datasets.load("cifar")
  with pytest.raises(data.DataError, match="needs data_path"):
    datasets.load("npz")
  with pytest.raises(data.DataError, match="needs tfds_name"):
    datasets.load("tfds")


@pytest.mark.slow
def test_mnist_through_tfds_equals_the_idx_files(data_root, tmp_path, monkeypatch):
  """TFDS reads the four official files from the shared folder as its manual_dir, offline.

  TFDS's own cap for tests (`max_examples_per_split`) keeps the first 5,000 examples of
  each file: preparing all 70,000 (a PNG each) took 30 of this test's 45 s."""
  tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS is the tfds extra: pip install "
                             "-e '.[test,tfds]' (CI does)")
  pytest.importorskip("tensorflow", reason="TFDS's builders need tensorflow (the tfds extra)")
  n = 5000
  monkeypatch.setattr(tfds.download, "DownloadConfig", functools.partial(
      tfds.download.DownloadConfig, max_examples_per_split=n))
  idx = data.load_mnist(data_root / "mnist")
  via_tfds = datasets.load("tfds", datasets.Options(
      tfds_name="mnist", data_dir=str(data_root / "mnist"), tfds_data_dir=str(tmp_path)))
  assert via_tfds.train.shape == (n, 28, 28, 1) and via_tfds.train.dtype == np.uint8
  assert via_tfds.test.shape == (n, 28, 28, 1)
  # TFDS stores the examples in its own order: match (image, label) pairs as multisets.
  pairs = lambda x, y: sorted(zip(map(bytes, x[:n].reshape(n, -1)), y[:n].tolist()))
  assert pairs(idx.train, idx.train_labels) == pairs(via_tfds.train, via_tfds.train_labels)
  assert pairs(idx.test, idx.test_labels) == pairs(via_tfds.test, via_tfds.test_labels)
