"""MNIST and Frey Face loading, its checks and errors, and binarization."""

import gzip
import pathlib
import shutil
import struct

import jax
import numpy as np
import pytest
from scipy import io as sio

from vae_jax import data


def test_mnist_is_the_official_data(mnist):
  assert mnist.train.shape == (60000, 28, 28, 1) and mnist.test.shape == (10000, 28, 28, 1)
  assert mnist.train.dtype == np.uint8
  np.testing.assert_allclose(mnist.train.mean() / 255, 0.1307, atol=1e-4)
  np.testing.assert_allclose((mnist.train / 255).std(), 0.3081, atol=1e-4)
  assert np.array_equal(np.unique(mnist.train_labels), np.arange(10))
  assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]


@pytest.fixture
def mnist_copy(data_root, tmp_path) -> pathlib.Path:
  for name, _, _ in data.MNIST_FILES.values():
    shutil.copy(data_root / "mnist" / name, tmp_path / name)
  return tmp_path


def _rewrite(path, raw: bytes):
  path.chmod(0o644)
  with gzip.open(path, "wb") as f:
    f.write(raw)


def test_missing_directory_names_it_and_both_ways_to_fill_it(tmp_path):
  with pytest.raises(data.DataError) as e:
    data.load_mnist(tmp_path / "nowhere")
  msg = str(e.value)
  assert str(tmp_path / "nowhere") in msg and "download=True" in msg and "tfds" in msg
  assert "\n" not in msg


def test_missing_file(mnist_copy):
  (mnist_copy / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(data.DataError, match="lacks t10k-labels-idx1-ubyte.gz"):
    data.load_mnist(mnist_copy)


def test_truncated_gzip(mnist_copy):
  path = mnist_copy / "t10k-images-idx3-ubyte.gz"
  path.chmod(0o644)
  path.write_bytes(path.read_bytes()[:100_000])
  with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.gz: not a complete gzip"):
    data.load_mnist(mnist_copy)


def test_wrong_magic(mnist_copy):
  path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
  raw = gzip.decompress(path.read_bytes())
  _rewrite(path, struct.pack(">I", 2051) + raw[4:])
  with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte.gz: bad magic number 2051"):
    data.load_mnist(mnist_copy)


def test_wrong_count_and_wrong_size(mnist_copy):
  path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
  raw = gzip.decompress(path.read_bytes())
  _rewrite(path, raw[:4] + struct.pack(">I", 9999) + raw[8:])
  with pytest.raises(data.DataError, match="holds 9999 items, expected 10000"):
    data.load_mnist(mnist_copy)
  _rewrite(path, raw[:-10])
  with pytest.raises(data.DataError, match="wrong size"):
    data.load_mnist(mnist_copy)


def test_checksum_mismatch(mnist_copy):
  path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
  raw = bytearray(gzip.decompress(path.read_bytes()))
  raw[8] = (raw[8] + 1) % 10  # a valid file with one label changed
  _rewrite(path, bytes(raw))
  with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
    data.load_mnist(mnist_copy)


def test_download_fills_missing_files_and_checks_them(mnist_copy, tmp_path, monkeypatch):
  target = tmp_path / "fresh"
  monkeypatch.setattr(data, "MNIST_URL", mnist_copy.as_uri() + "/")
  loaded = data.load_mnist(target, download=True)
  assert loaded.train.shape == (60000, 28, 28, 1)
  assert sorted(p.name for p in target.iterdir()) == sorted(
      n for n, _, _ in data.MNIST_FILES.values())
  # A corrupt download is refused and leaves nothing behind.
  (target / "t10k-labels-idx1-ubyte.gz").unlink()
  (mnist_copy / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
  (mnist_copy / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
  with pytest.raises(data.DataError, match="fails its sha256 check"):
    data.load_mnist(target, download=True)
  assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
  # Offline: the error says the download failed.
  monkeypatch.setattr(data, "MNIST_URL", (tmp_path / "no-such-mirror").as_uri() + "/")
  with pytest.raises(data.DataError, match="download failed") as e:
    data.load_mnist(target, download=True)
  assert "run again on a machine with internet" in str(e.value)  # not "download=True"
  assert "download=True" not in str(e.value)


def test_the_data_falls_back_to_the_users_cache_folder(monkeypatch, tmp_path):
  monkeypatch.delenv(data.DATA_ENV, raising=False)
  monkeypatch.setattr(data, "__file__", str(tmp_path / "a" / "b" / "data.py"))  # no shared/
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert data.default_data_root() == tmp_path / "xdg" / "vae_jax"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert data.default_data_root() == tmp_path / "home" / ".cache" / "vae_jax"
  monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "mine"))
  assert data.default_data_root() == tmp_path / "mine"


def test_frey_face(frey_root, tmp_path):
  data_root = frey_root
  frey = data.load_frey_face(data_root / "frey")
  assert frey.train.shape == (1765, 28, 20, 1) and frey.test.shape == (200, 28, 20, 1)
  assert frey.train.dtype == np.float32 and 0 <= frey.train.min() and frey.train.max() <= 1
  assert frey.image_shape == (28, 20, 1)
  ff = sio.loadmat(data_root / "frey" / data.FREY_FILE)["ff"]
  # Every frame lands in exactly one split, upright as 28x20.
  all_frames = np.concatenate([frey.train, frey.test]) * 255
  np.testing.assert_allclose(np.sort(all_frames.sum((1, 2, 3))), np.sort(ff.sum(0).astype(np.float32)),
                             rtol=1e-5)
  assert np.array_equal(frey.test, data.load_frey_face(data_root / "frey").test)
  with pytest.raises(data.DataError, match="Frey Face not found"):
    data.load_frey_face(tmp_path)
  sio.savemat(tmp_path / data.FREY_FILE, {"faces": ff})
  with pytest.raises(data.DataError, match="has no variable 'ff'"):
    data.load_frey_face(tmp_path)
  (tmp_path / data.FREY_FILE).write_bytes(b"not a mat file")
  with pytest.raises(data.DataError, match="not a readable MATLAB file"):
    data.load_frey_face(tmp_path)


@pytest.mark.parametrize("prng", ["threefry2x32", "philox4x32"])
def test_binarization(mnist, prng):
  images = mnist.test[:2000]
  key = lambda seed: jax.random.key(seed, impl=prng)
  x = data.binarize(key(0), images, "dynamic")
  assert set(np.unique(x)) == {0.0, 1.0}
  # Each pixel is on with probability grey / 255: over all pixels, and for each
  # band of grey levels over 20 draws of the same images.
  p = images.mean() / 255
  assert abs(float(x.mean()) - p) < 4 * np.sqrt(p * (1 - p) / x.size)
  draws = np.stack([np.asarray(data.binarize(jax.random.fold_in(key(2), i), images[:200],
                                             "dynamic")) for i in range(20)])
  grey = np.broadcast_to(images[:200], draws.shape)
  for lo, hi in [(1, 64), (64, 128), (128, 192), (192, 255), (255, 256)]:
    band = (grey >= lo) & (grey < hi)
    p = grey[band].mean() / 255
    assert abs(draws[band].mean() - p) < 4 * np.sqrt(p * (1 - p) / band.sum()) + 1e-9, (lo, p)
  assert not np.any(draws[grey == 0])
  assert not np.array_equal(x, data.binarize(key(1), images, "dynamic"))
  np.testing.assert_array_equal(data.binarize(None, images, "none"), images / np.float32(255))
  fixed = data.fixed_binarization(images, stream=0)
  np.testing.assert_array_equal(fixed, data.fixed_binarization(images, stream=0))
  assert set(np.unique(fixed)) == {0, 255}


@pytest.mark.parametrize("ff,words", [
    (np.full((560, 300), 7, np.uint16), "pixels of type uint16"),
    (np.full((560, 300), 1.5), "outside [0, 1]"),
    (np.where(np.arange(560 * 300).reshape(560, 300) == 5, np.nan, 0.5), "1 NaN or infinite"),
    (np.zeros((560, 5), np.uint8), "'ff' holds 5 frames, but 200 are held out"),
])
def test_frey_face_in_another_scale_or_type_is_refused_naming_the_file(ff, words, tmp_path):
  from scipy import io as sio  # pylint: disable=g-import-not-at-top
  sio.savemat(tmp_path / data.FREY_FILE, {"ff": ff})
  with pytest.raises(data.DataError) as e:
    data.load_frey_face(tmp_path)
  assert str(e.value).startswith(str(tmp_path / data.FREY_FILE)) and words in str(e.value)


def test_frey_face_floats_in_the_unit_interval_are_taken_as_they_are(tmp_path):
  from scipy import io as sio  # pylint: disable=g-import-not-at-top
  ff = np.linspace(0, 1, 560 * 300).reshape(560, 300)
  sio.savemat(tmp_path / data.FREY_FILE, {"ff": ff})
  loaded = data.load_frey_face(tmp_path, num_test=20)
  assert loaded.train.max() <= 1.0 and float(np.concatenate([loaded.train, loaded.test]).max()) \
      == pytest.approx(1.0)
