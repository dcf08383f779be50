"""Pictures on the host: image grids, the latent manifold, the latent scatter.

`model_images` is the one pure function (jit it with the parameters); everything
else takes numpy arrays and writes PNGs through matplotlib's object-oriented `Figure`
(no pyplot): importing this module switches no backend, so a notebook keeps its
inline plots.
"""

import math
import pathlib
import statistics

import jax
import jax.numpy as jnp
import matplotlib
from matplotlib.figure import Figure
import numpy as np

from vae_jax import distributions
from vae_jax import generation


_TITLES = {"reconstructions": "test images (odd rows) and reconstructions (even rows)",
           "samples": "decoded z ~ p(z), the model's prior", "manifold": "decoded grid of z (inverse normal CDF)"}


SAMPLES_PER_CLASS = 8  # a conditional model's samples: a row of this many per class
MAX_CLASS_ROWS = 20  # ... for at most this many classes (the first ones)


def model_images(parts, test_x, key, class_parts=None, num_classes: int = 0
                 ) -> dict[str, jax.Array]:
  """The images behind a model's pictures, a pure function to `jax.jit` with the
  parameters (as the runner does):
  "reconstructions" `[64, *event]` of `test_x[:64]`, 64 "samples" `[64, *event]` drawn
  with `key` from the prior, and, for a 2-d N(0, I) prior, the "manifold" `[400, *event]`
  (Figure 4). A conditional model's `parts` are bound to the labels of `test_x[:64]`
  and its `class_parts` to `SAMPLES_PER_CLASS` copies of each of `num_classes` classes
  in turn: its samples come from those, a row per class, and it has no manifold."""
  if class_parts is not None:
    return {"reconstructions": generation.reconstruct(parts, test_x[:64]),
            "samples": generation.generate(class_parts, key, num_classes * SAMPLES_PER_CLASS)}
  images = {"reconstructions": generation.reconstruct(parts, test_x[:64]),
            "samples": generation.generate(parts, key, 64)}
  if isinstance(parts.prior, distributions.StandardNormal) and parts.prior.dim == 2:
    images["manifold"] = generation.decode(parts, jnp.asarray(manifold_latents(20)))
  return images


def model_grids(images: dict, test_x, image_shape) -> dict[str, np.ndarray]:
  """`model_images` tiled: the test images beside their reconstructions, 8 samples
  and 20 manifold images a row."""
  images = {name: np.asarray(a) for name, a in images.items()}
  originals = np.asarray(test_x[:len(images["reconstructions"])])
  grids = {"reconstructions": reconstruction_grid(originals, images["reconstructions"],
                                                  image_shape, 16),
           "samples": tile(images["samples"], image_shape, 8)}
  if "manifold" in images:
    grids["manifold"] = tile(images["manifold"], image_shape, 20)
  return grids


def save_model_grids(directory: pathlib.Path, grids: dict, caption: str = "",
                     num_classes: int = 0) -> None:
  """Each grid of `model_grids` as DIRECTORY/NAME.png, titled (and `caption`, e.g. the
  run and epoch); the manifold with its z1 and z2 axes; a conditional model's samples
  (`num_classes`) say their rows are the classes."""
  titles = dict(_TITLES)
  if num_classes:
    titles["samples"] = "decoded z ~ p(z) given y: a row per class"
  for name, g in grids.items():
    title = f"{titles[name]}\n{caption}" if caption else titles[name]
    rows = [str(c) for c in range(num_classes)] if name == "samples" and num_classes else None
    save_grid(pathlib.Path(directory) / f"{name}.png", g, title,
              latent_axes=manifold_latents() if name == "manifold" else None,
              row_labels=rows, row_title="y")


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


def save_grid(path, grid: np.ndarray, title: str | None = None, scale: float = 0.025,
              latent_axes: np.ndarray | None = None, row_labels: list[str] | None = None,
              row_title: str = "") -> None:
  """Writes a tiled grid of images in [0, 1] (grey `[H, W]` or colour `[H, W, 3]`) as a PNG,
  2.5 screen pixels per image pixel. `latent_axes`: the `[n * n, 2]` z of a square grid
  (`manifold_latents`), marked on the axes as z1 and z2; `row_labels`: a label per row
  of images (a conditional model's class), under the axis title `row_title`."""
  # Inches: the images at their aspect, a band above for the title, margins for the axes.
  width = max(2.0, grid.shape[1] * scale)
  height = width * grid.shape[0] / grid.shape[1]
  above = 0.2 * (title.count("\n") + 1) + 0.1 if title else 0.0
  margin = 0.45 if latent_axes is not None or row_labels else 0.0
  fig = Figure(figsize=(width + margin, height + above + margin))
  ax = fig.add_axes((margin / (width + margin), margin / (height + above + margin),
                     width / (width + margin), height / (height + above + margin)))
  if grid.ndim == 2:
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
  else:
    ax.imshow(np.clip(grid, 0.0, 1.0), interpolation="nearest")
  if latent_axes is not None:
    # Ticks at the first and last frames' centres and at z = 0, the grid's middle; a
    # frame's width and height each set its own axis (Frey Face's are 20 x 28).
    n = int(round(math.sqrt(len(latent_axes))))
    z1, z2 = latent_axes[:n, 0], latent_axes[::n, 1]
    for set_ticks, size, z, name in ((ax.set_xticks, grid.shape[1], z1, "z1"),
                                     (ax.set_yticks, grid.shape[0], z2, "z2")):
      cell = (size - 1) / n
      set_ticks([1 + cell * 0.5, (size - 1) / 2 + 0.5, 1 + cell * (n - 0.5)],
                [f"{z[0]:.1f}", "0", f"{z[-1]:.1f}"], fontsize=7)
    ax.set_xlabel("z1", fontsize=8)
    ax.set_ylabel("z2", fontsize=8)
  elif row_labels:
    cell = (grid.shape[0] - 1) / len(row_labels)
    ax.set_xticks([])
    ax.set_yticks([1 + cell * (i + 0.5) for i in range(len(row_labels))], row_labels,
                  fontsize=7)
    ax.set_ylabel(row_title, fontsize=8)
    for side in ax.spines.values():
      side.set_visible(False)
  else:
    ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=9, y=1 - 0.05 / (height + above + margin))
  fig.savefig(pathlib.Path(path), dpi=100)


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
  # The standard library's inverse CDF: scipy.stats would add 2 s to every command's start.
  q = np.array([statistics.NormalDist().inv_cdf(p) for p in np.linspace(eps, 1 - eps, n)])
  z1, z2 = np.meshgrid(q, q[::-1])
  return np.stack([z1.ravel(), z2.ravel()], axis=1).astype(np.float32)


def save_latent_scatter(path, means: np.ndarray, labels: np.ndarray | None, title: str) -> None:
  """The encoder means `[n, 2]` of a data set, coloured by label."""
  fig = Figure(figsize=(6, 5.4))
  ax = fig.subplots()
  if labels is None:
    ax.scatter(means[:, 0], means[:, 1], s=3, alpha=0.6)
  else:
    sc = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", s=2, alpha=0.7)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="label")
  ax.set_xlabel("$z_1$ (encoder mean)")
  ax.set_ylabel("$z_2$ (encoder mean)")
  ax.set_title(title, fontsize=10)
  _save(fig, path)


def save_learning_curves(path, curves: dict, title: str) -> None:
  """Figure 2 of Kingma & Welling: the bound against training samples seen.

  Args:
    path: the PNG to write.
    curves: {latent size: the run's metrics.jsonl records}.
    title: the figure's title.
  """
  fig = Figure(figsize=(7, 4.8))
  ax = fig.subplots()
  colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(curves)))
  for colour, (size, records) in zip(colours, sorted(curves.items())):
    seen = [r["examples_seen"] for r in records]
    ax.plot(seen, [r["test_elbo"] for r in records], color=colour, label=f"$N_z$ = {size}")
    ax.plot(seen, [r["train_elbo"] for r in records], color=colour, linestyle="--")
  _finish(fig, ax, path, title, "training samples evaluated", "lower bound (nats per data point)")


def save_time_curves(path, curves: dict, title: str, marks: dict | None = None,
                     finals: dict | None = None, points: dict | None = None,
                     targets: dict | None = None) -> None:
  """Test ELBO against training wall time, one line per run, and log p(x) where scored.

  Args:
    path: the PNG to write.
    curves: {label: the run's metrics.jsonl records (with "wall_s", "test_elbo")}.
    title: the figure's title.
    marks: {label: epochs to mark and number on that run's line} (e.g. the
      stage boundaries of a schedule), where the records reach them.
    finals: {label: (minutes, log p(x)[, its scope, e.g. "k=5000, 10000 images"])}: a
      run's scored log-likelihood at the end of its training, a star in its line's colour.
    points: {label: (minutes, log p(x))}: results without a curve (a square each).
    targets: {label: nats}: reference values, dashed horizontal lines.
  """
  fig = Figure(figsize=(7.5, 4.8))
  ax = fig.subplots()
  values = []
  for label, records in curves.items():
    minutes = [r["wall_s"] / 60 for r in records]
    elbo = [r["test_elbo"] for r in records]
    line, = ax.plot(minutes, elbo, label=f"{label}: test ELBO")
    values += elbo
    by_epoch = {r["epoch"]: r for r in records}
    for epoch in (marks or {}).get(label, ()):
      if epoch in by_epoch:
        r = by_epoch[epoch]
        ax.plot(r["wall_s"] / 60, r["test_elbo"], "o", color=line.get_color(), ms=4)
        ax.annotate(str(epoch), (r["wall_s"] / 60, r["test_elbo"]), fontsize=7,
                    xytext=(3, -9), textcoords="offset points")
    if label in (finals or {}):
      t, v, *scope = finals[label]
      scope = f" ({scope[0]})" if scope else ""
      ax.plot(t, v, "*", color=line.get_color(), ms=11,
              label=f"{label}: log p(x) {v:.2f}{scope}")
      values.append(v)
  for label, (t, v) in (points or {}).items():
    ax.plot(t, v, "s", ms=7, label=f"{label}: log p(x) {v:.2f}")
    values.append(v)
  for label, v in (targets or {}).items():
    ax.axhline(v, ls="--", lw=0.8, color="grey")
    ax.annotate(f"{label} ({v:.2f})", (0.01, v), xycoords=("axes fraction", "data"),
                fontsize=7, xytext=(0, 2), textcoords="offset points", color="dimgrey")
    values.append(v)
  best = max(values)
  ax.set_ylim(best - 25, best + 1)  # the first minutes would flatten the end, where runs differ
  _finish(fig, ax, path, title, "training wall time (minutes)", "nats per image")


def save_sweep(path, setting: str, figures: dict, title: str) -> None:
  """A sweep of one setting: each figure {name: [(value, y), ...]} against the values,
  one panel each (numbers on a numeric axis, anything else as categories)."""
  fig = Figure(figsize=(4.0 * len(figures), 3.2))
  for i, (name, points) in enumerate(figures.items()):
    ax = fig.add_subplot(1, len(figures), i + 1)
    xs = [x for x, _ in points]
    try:
      xs = [float(x) for x in xs]
      ticks = None
    except ValueError:
      ticks, xs = xs, list(range(len(xs)))
    ax.plot(xs, [y for _, y in points], "o-")
    if ticks is not None:
      ax.set_xticks(xs, ticks)
    ax.set_xlabel(setting)
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)


def save_gradient_variance(path, rows: list[dict], title: str) -> None:
  """Total variance of the encoder gradient against L, one line per estimator."""
  fig = Figure(figsize=(6.5, 4.5))
  ax = fig.subplots()
  Ls = [r["L"] for r in rows]
  for name, style in (("score_function", "o-"), ("reparameterization", "s-")):
    ax.plot(Ls, [r[f"{name}_variance"] for r in rows], style, label=name.replace("_", " "))
  ax.plot(Ls, [rows[0]["reparameterization_mean_sq_norm"]] * len(Ls), "k:",
          label="squared norm of the mean gradient")
  ax.set_yscale("log")
  _finish(fig, ax, path, title, "samples of z per data point (L)",
          "total variance of the gradient estimate")


def _finish(fig: Figure, ax, path, title: str, xlabel: str, ylabel: str) -> None:
  """A line plot's common ending: log x axis, labels, grid, legend, written to `path`."""
  ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3, which="both")
  ax.legend()
  _save(fig, path)


def _save(fig: Figure, path) -> None:
  fig.tight_layout()
  fig.savefig(pathlib.Path(path), dpi=100)
