"""Shared fixtures: the data sets, one XLA compilation cache that outlives the session,
and the reference runs that many tests copy instead of training their own.

Compiling, not computing, is most of this suite's time: XLA's CPU backend spends it
in LLVM's optimizer. The tests run at LLVM's -O1 (`--xla_backend_optimization_level=1`;
XLA's default is 3) and with XLA's loop emitters for CPU fusions
(`--xla_cpu_use_fusion_emitters=false`): the same XLA computations, fusions and float
semantics, less optimized machine code that compiles sooner (docs/contributing.md has
the measurements). The commands and benchmarks run as users run them.

The cache: JAX's persistent compilation cache keys an executable by its computation and
compiler options, so a second compile of the same computation is a file read and the
numbers are the same executable's. It lives under the user's cache folder
($XDG_CACHE_HOME or ~/.cache)/vae_jax/test-xla/KEY, KEY naming the jax and jaxlib
versions and the XLA flags, and the tests never delete it: the next run (and CI on the
same machine) starts warm. $JAX_COMPILATION_CACHE_DIR, where set, wins. A cold first run
passes as well, only slower.

The data: MNIST from $VAE_JAX_DATA, else ../shared/data, else downloaded (sha256
checked) into the user's cache folder as the main command does; where none of that
works, the tests that need MNIST skip with the reason, found once per session.
"""

import hashlib
import importlib.metadata
import os
import pathlib
import re
import shutil
import sys

for _flag in ("--xla_backend_optimization_level=1", "--xla_cpu_use_fusion_emitters=false"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), _flag]).strip()


def _test_cache_dir() -> str:
  """The persistent cache of this jax, jaxlib and XLA flags (never deleted by the tests)."""
  versions = " ".join(importlib.metadata.version(p) for p in ("jax", "jaxlib"))
  key = hashlib.sha256(f"{versions} {sys.version_info[:2]} {os.environ['XLA_FLAGS']}"
                       .encode()).hexdigest()[:16]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(base, "vae_jax", "test-xla", key)


os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _test_cache_dir())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# No size limit: with one, JAX sizes the whole folder at every write, which made the
# thousands of small eager compiles ten times slower.

import filelock  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from tests import helpers  # pylint: disable=g-import-not-at-top,wrong-import-position
from vae_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position


def _shared_dir(tmp_path_factory) -> pathlib.Path:
  """A folder all xdist workers of this session share (one run without xdist: its own)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _once(tmp_path_factory, name: str, make) -> pathlib.Path:
  """`make(folder)` run once per session, behind a file lock, into a folder every worker
  sees: the folder. A `make` that raised is not retried: its message is kept and
  reported (as a skip) to every test that asks."""
  shared = _shared_dir(tmp_path_factory)
  folder, done, failed = shared / name, shared / f"{name}.done", shared / f"{name}.failed"
  with filelock.FileLock(str(shared / f"{name}.lock")):
    if not done.exists() and not failed.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      try:
        make(folder)
        done.touch()
      except pytest.skip.Exception as e:
        failed.write_text(str(e.msg))
  if failed.exists():
    pytest.skip(failed.read_text())
  return folder


def _find_mnist(folder: pathlib.Path) -> None:
  root = data.default_data_root()
  if not all((root / "mnist" / name).is_file() for name, _, _ in data.MNIST_FILES.values()):
    try:  # as the main command does: into the data root, checked against the sha256
      data.load_mnist(root / "mnist", download=True, timeout=10.0)
    except (data.DataError, OSError) as e:
      why = re.search(r"download failed: [^)]*", str(e))
      pytest.skip(f"needs MNIST: none in {root / 'mnist'}, and "
                  f"{why.group(0) if why else str(e).splitlines()[0][:200]}")
  (folder / "root").write_text(str(root))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> pathlib.Path:
  """The data root holding mnist/ (found or downloaded once a session), else a skip."""
  folder = _once(tmp_path_factory, "mnist_root", _find_mnist)
  root = pathlib.Path((folder / "root").read_text())
  os.environ[data.DATA_ENV] = str(root)  # the commands under test read the same data
  return root


@pytest.fixture(scope="session")
def frey_root() -> pathlib.Path:
  """The data root holding frey/ (never downloaded: Frey Face has no stable address)."""
  root = data.default_data_root()
  if not (root / "frey" / data.FREY_FILE).is_file():
    pytest.skip(f"needs Frey Face: no {root / 'frey' / data.FREY_FILE}")
  return root


@pytest.fixture(scope="session")
def mnist(data_root) -> data.Dataset:
  return data.load_mnist(data_root / "mnist")


@pytest.fixture(scope="session")
def tiny_data(mnist) -> data.Dataset:
  """The end-to-end tests' one shape of data: `helpers.TINY_TRAIN` training and
  `helpers.TINY_TEST` test images of MNIST."""
  return data.subset(mnist, helpers.TINY_TRAIN, helpers.TINY_TEST)


@pytest.fixture(scope="session")
def reference_run(tiny_data, tmp_path_factory) -> pathlib.Path:
  """`helpers.TINY` trained uninterrupted, once a session: the workdir that tests copy
  (`helpers.copy_run`) to resume, damage, evaluate or compare against. Never written."""
  from vae_jax import runner  # pylint: disable=g-import-not-at-top
  make = lambda folder: runner.train_and_evaluate(helpers.TINY, tiny_data, folder / "run")
  return _once(tmp_path_factory, "reference_run", make) / "run"


def pytest_collection_modifyitems(items):
  """The slowest tiers first: xdist hands tests out in this order, so the long ones start
  early and the short ones fill both workers at the end instead of one worker finishing
  a long test alone."""
  items.sort(key=lambda item: (item.get_closest_marker("system") is None,
                               item.get_closest_marker("slow") is None))
