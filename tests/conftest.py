"""Shared fixtures: the real data sets from $VAE_JAX_DATA (default ../shared/data)."""

import pathlib

import pytest

from vae_jax import data


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
