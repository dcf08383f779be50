"""Pictures on the host: image grids, the latent manifold, the latent scatter.

Everything here takes numpy arrays and writes PNGs with matplotlib's Agg
backend; nothing runs under `jit`.
"""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from scipy import stats


def tile(images: np.ndarray, image_shape, cols: int) -> np.ndarray:
  """n images (any layout of `image_shape` = (h, w) or (h, w, c) values each) -> one
  `[rows * h, cols * w]` grey array (c = 1) or `[rows * h, cols * w, 3]` colour array,
  with 1-pixel gaps."""
  h, w = image_shape[:2]
  c = image_shape[2] if len(image_shape) > 2 else 1
  n = len(images)
  rows = -(-n // cols)
  grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
  for i, img in enumerate(np.asarray(images, np.float32).reshape(n, h, w, c)):
    r, k = divmod(i, cols)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + k * (w + 1):1 + k * (w + 1) + w] = img
  return grid[..., 0] if c == 1 else grid


def save_grid(path, grid: np.ndarray, title: str | None = None, scale: float = 0.025) -> None:
  """Writes a tiled grid of images in [0, 1] (grey `[H, W]` or colour `[H, W, 3]`) as a PNG,
  2.5 screen pixels per image pixel."""
  fig = plt.figure(figsize=(max(2.0, grid.shape[1] * scale), max(2.0, grid.shape[0] * scale)))
  ax = fig.add_axes((0, 0, 1, 0.93 if title else 1))
  if grid.ndim == 2:
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  else:
    ax.imshow(np.clip(grid, 0.0, 1.0), interpolation="nearest")
  ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=9)
  fig.savefig(pathlib.Path(path), dpi=100)
  plt.close(fig)


def reconstruction_grid(originals, reconstructions, image_shape, cols: int = 16) -> np.ndarray:
  """Rows of originals, each followed by a row of their reconstructions."""
  cols = min(cols, len(originals))  # a test set smaller than one row
  n = (len(originals) // cols) * cols
  pairs = []
  for r in range(0, n, cols):
    pairs += [originals[r:r + cols], reconstructions[r:r + cols]]
  return tile(np.concatenate(pairs), image_shape, cols)


def manifold_latents(n: int = 20, eps: float = 0.05) -> np.ndarray:
  """A [n * n, 2] grid of z through the inverse normal CDF (the paper's Figure 4):
  equal prior mass between neighbouring points. Row i of the picture is z_2
  falling from top to bottom, column j is z_1 rising from left to right."""
  q = stats.norm.ppf(np.linspace(eps, 1 - eps, n))
  z1, z2 = np.meshgrid(q, q[::-1])
  return np.stack([z1.ravel(), z2.ravel()], axis=1).astype(np.float32)


def save_latent_scatter(path, means: np.ndarray, labels: np.ndarray | None, title: str) -> None:
  """The encoder means `[n, 2]` of a data set, coloured by label."""
  fig, ax = plt.subplots(figsize=(6, 5.4))
  if labels is None:
    ax.scatter(means[:, 0], means[:, 1], s=3, alpha=0.6)
  else:
    sc = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", s=2, alpha=0.7)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="label")
  ax.set_xlabel("$z_1$ (encoder mean)")
  ax.set_ylabel("$z_2$ (encoder mean)")
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(pathlib.Path(path), dpi=100)
  plt.close(fig)


def save_learning_curves(path, curves: dict, title: str) -> None:
  """Figure 2 of Kingma & Welling: the bound against training samples seen.

  Args:
    path: the PNG to write.
    curves: {latent size: the run's metrics.jsonl records}.
    title: the figure's title.
  """
  fig, ax = plt.subplots(figsize=(7, 4.8))
  colours = plt.cm.viridis(np.linspace(0, 0.9, len(curves)))
  for colour, (size, records) in zip(colours, sorted(curves.items())):
    seen = [r["examples_seen"] for r in records]
    ax.plot(seen, [r["test_elbo"] for r in records], color=colour, label=f"$N_z$ = {size}")
    ax.plot(seen, [r["train_elbo"] for r in records], color=colour, linestyle="--")
  ax.set_xscale("log")
  ax.set_xlabel("training samples evaluated")
  ax.set_ylabel("lower bound (nats per data point)")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(pathlib.Path(path), dpi=100)
  plt.close(fig)


def save_gradient_variance(path, rows: list[dict], title: str) -> None:
  """Total variance of the encoder gradient against L, one line per estimator."""
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  Ls = [r["L"] for r in rows]
  for name, style in (("score_function", "o-"), ("reparameterization", "s-")):
    ax.plot(Ls, [r[f"{name}_variance"] for r in rows], style, label=name.replace("_", " "))
  ax.plot(Ls, [rows[0]["reparameterization_mean_sq_norm"]] * len(Ls), "k:",
          label="squared norm of the mean gradient")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("samples of z per data point (L)")
  ax.set_ylabel("total variance of the gradient estimate")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3, which="both")
  ax.legend()
  fig.tight_layout()
  fig.savefig(pathlib.Path(path), dpi=100)
  plt.close(fig)
