"""Pictures: no import-time side effects, and the curve plot of README."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

from vae_jax import plots


def test_importing_the_library_leaves_matplotlib_alone():
  # A notebook keeps its backend: nothing of vae_jax switches it or loads pyplot.
  code = ("import sys, matplotlib; before = matplotlib.rcParams._get_backend_or_none(); "
          "import vae_jax, vae_jax.plots, vae_jax.runner; "
          "print(before == matplotlib.rcParams._get_backend_or_none(), "
          "'matplotlib.pyplot' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["True", "False"], out.stdout


def test_time_curves_mark_the_stage_ends(tmp_path):
  records = [{"epoch": e, "wall_s": 2.0 * e, "test_elbo": -100 + 10 * np.log(e)}
             for e in range(1, 50)]
  fast = [{"epoch": e, "wall_s": 1.0 * e, "test_elbo": -95 + 8 * np.log(e)} for e in range(1, 30)]
  path = tmp_path / "curves.png"
  plots.save_time_curves(path, {"paper schedule": records, "fast": fast}, "t",
                         marks={"paper schedule": [1, 4, 13, 40, 121]})
  image = np.asarray(Image.open(path).convert("L"))
  assert image.shape[0] > 300 and image.shape[1] > 500
  assert int(image.min()) < 100 and int(image.max()) == 255  # lines drawn on a white ground


def _saved_axes(monkeypatch, draw):
  """The axes of the figure `draw()` saves (its ticks and labels), nothing written."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  saved = []
  monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
  draw()
  return saved[0].axes[0]


def test_the_manifolds_ticks_sit_at_the_first_last_and_zero_frames_of_a_tall_frame(monkeypatch):
  """Frey Face's frames are 20 wide and 28 high: each axis by its own frame size, the
  middle tick at z = 0 in the grid's middle."""
  grid = np.zeros((20 * 29 + 1, 20 * 21 + 1))
  ax = _saved_axes(monkeypatch, lambda: plots.save_grid(
      "unused.png", grid, "m", latent_axes=plots.manifold_latents()))
  np.testing.assert_allclose(ax.get_xticks(), [1 + 10.5, 210.5, 1 + 21 * 19.5])
  np.testing.assert_allclose(ax.get_yticks(), [1 + 14.5, 290.5, 1 + 29 * 19.5])
  assert [t.get_text() for t in ax.get_yticklabels()] == ["1.6", "0", "-1.6"]  # z2 falls
  assert [t.get_text() for t in ax.get_xticklabels()] == ["-1.6", "0", "1.6"]


def test_a_conditional_models_sample_rows_are_labelled_with_their_class(monkeypatch):
  grid = np.zeros((3 * 29 + 1, 8 * 29 + 1))
  ax = _saved_axes(monkeypatch, lambda: plots.save_model_grids(
      pathlib.Path("unused"), {"samples": grid}, "run, epoch 1", num_classes=3))
  assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
  assert ax.get_ylabel() == "y"
  np.testing.assert_allclose(ax.get_yticks(), [15.5, 44.5, 73.5])
