"""Shared fixtures: the real data sets from $VAE_JAX_DATA (default ../shared/data), and
one XLA compilation cache for the whole session.

Compiling, not computing, is most of this suite's time: XLA's CPU backend spends it
in LLVM's optimizer. The tests run at LLVM's -O1 (`--xla_backend_optimization_level=1`;
XLA's default is 3): the same XLA computations, fusions and float semantics (no
fast-math either way), less optimized machine code. Measured on 2 cores: a compile-bound
module 89 s at the default, 62 s at 1, 141 s at 0 (a conv epoch runs 5 times slower
without optimization). They also use XLA's loop emitters for CPU fusions in place of
its newer MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`), which
compile slower: the fast tier took 179 s against 218 s, one compile-bound test 25-29 s
against 35-39 s (2 cores, alone, back to back). Both flags change how machine code is
generated, not what is computed; the commands and benchmarks run as users run them.

The cache: many tests compile the same small computations (the same tiny model in
different workdirs, the same command in several subprocesses). JAX's persistent
compilation cache keys an executable by its computation and compiler options, so a
second compile of the same computation is a file read and the numbers are the same
executable's. The controller creates the directory; xdist's workers and the tests'
subprocesses inherit it through the environment; it is removed at the end.
"""

import os
import pathlib
import shutil
import tempfile

for _flag in ("--xla_backend_optimization_level=1", "--xla_cpu_use_fusion_emitters=false"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), _flag]).strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vae_jax_test_xla_")
  os.environ["VAE_JAX_TEST_OWNS_CACHE"] = "1"
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from vae_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position


def pytest_sessionfinish(session):  # pylint: disable=unused-argument
  # The controller (or a run without xdist) made the cache; its workers did not.
  if os.environ.get("VAE_JAX_TEST_OWNS_CACHE") and "PYTEST_XDIST_WORKER" not in os.environ:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
  root = data.default_data_root()
  if not (root / "mnist").is_dir():
    pytest.fail(f"no MNIST under {root}: set ${data.DATA_ENV} to the directory holding "
                f"mnist/ and frey/ (../shared/data beside the project root)")
  return root


@pytest.fixture(scope="session")
def mnist(data_root) -> data.Dataset:
  return data.load_mnist(data_root / "mnist")


def pytest_collection_modifyitems(items):
  """The slow tier first: xdist hands tests out in this order, so the long ones start
  early and the short ones fill both workers at the end instead of one worker finishing
  a long test alone."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
