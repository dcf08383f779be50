"""The wheel: one package (vae_jax, the command lines inside it as vae_jax.experiments)
and its console scripts."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds a wheel (pip fetches setuptools from the registry)
@pytest.mark.system
def test_the_wheel_ships_vae_jax_alone_with_its_commands(tmp_path):
  built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
  if built.returncode and "Could not find a version" in built.stderr:
    pytest.skip("pip cannot reach a package registry for setuptools")
  assert built.returncode == 0, built.stderr[-3000:]
  wheel = zipfile.ZipFile(next(tmp_path.glob("vae_jax-*.whl")))
  names = wheel.namelist()
  assert {n.split("/")[0] for n in names} == {"vae_jax", next(
      n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))}
  for module in ("cli", "mnist", "train", "evaluate", "sweep"):
    assert f"vae_jax/experiments/{module}.py" in names, module
  entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
  for script in ("vae-jax-mnist = vae_jax.experiments.mnist:console",
                 "vae-jax-train = vae_jax.experiments.train:console",
                 "vae-jax-evaluate = vae_jax.experiments.evaluate:console"):
    assert script in entry_points, entry_points


def test_the_console_scripts_name_callables_of_the_command_modules():
  """What an installed package's scripts call: `console` of each entry module, found
  under vae_jax.experiments (the checkout's experiments/) as the wheel lays it out."""
  import importlib  # pylint: disable=g-import-not-at-top
  tomllib = pytest.importorskip("tomllib", reason="Python 3.11's TOML reader")
  scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  assert set(scripts) == {"vae-jax-mnist", "vae-jax-train", "vae-jax-evaluate"}
  for target in scripts.values():
    module, _, name = target.partition(":")
    assert module.startswith("vae_jax.experiments.")
    checkout = importlib.import_module(module.replace("vae_jax.", "", 1))
    assert callable(getattr(checkout, name)), target
