"""Pictures: no import-time side effects, and the curve plot of README."""

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
