"""Figures as PNG files, headless (matplotlib's Agg backend): image grids and metric curves."""

import os

import numpy as np

from gen_jax import files


def pyplot():
  """matplotlib.pyplot on the headless Agg backend, imported on first use (it costs ~1 s at start-up)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def image_grid(images, columns):
  """(N, H, W, C) in [0, 1] -> one (rows·H, columns·W, C) array with 1-pixel gaps."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  count, height, width, channels = images.shape
  rows = -(-count // columns)
  grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), np.float32)
  for index in range(count):
    row, column = divmod(index, columns)
    grid[row * (height + 1):row * (height + 1) + height,
         column * (width + 1):column * (width + 1) + width] = images[index]
  return grid


def _as_shown(grid):
  """imshow's/imsave's arguments for a grid: one channel in grey on [0, 1], three as RGB."""
  return (grid[..., 0], dict(cmap="gray", vmin=0.0, vmax=1.0)) if grid.shape[-1] == 1 else (grid, {})


def save_image_grid(path, images, columns=8):
  image, style = _as_shown(image_grid(images, columns))
  plt = pyplot()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  plt.imsave(path, image, **style)


def show_image_grid(axis, images, columns):
  """Draws `image_grid(images, columns)` on a matplotlib axis, grey or colour as the images are."""
  image, style = _as_shown(image_grid(images, columns))
  axis.imshow(image, **style)


def read_metrics(workdir):
  return files.read_json_lines(os.path.join(workdir, "metrics.jsonl"))


def read_reference_curve(path):
  """A published curve: a CSV file with a header line, then examples_seen,value rows."""
  return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def draw_split_curves(axis, rows, metric, colour, label):
  """`metric` against examples seen: train rows dashed, validation dotted, test solid."""
  for split, style in (("train", "--"), ("validation", ":"), ("test", "-")):
    points = [(row["examples_seen"], row[metric]) for row in rows
              if row["split"] == split and isinstance(row.get(metric), (int, float))]
    if points:
      x, y = zip(*points)
      axis.plot(x, y, style, color=colour, label=f"{label} ({split})")


def plot_curves(workdirs, path, metric="elbo", labels=None, reference_csv=None, log_x=True):
  """`metric` against examples seen, train (dashed) and test (solid), one colour per workdir.

  `reference_csv` (columns examples_seen,value with a header line) adds a published curve in black.
  """
  plt = pyplot()
  figure, axis = plt.subplots(figsize=(6, 4))
  for index, workdir in enumerate(workdirs):
    label = labels[index] if labels else os.path.basename(os.path.normpath(workdir))
    draw_split_curves(axis, read_metrics(workdir), metric, f"C{index}", label)
  if reference_csv:
    reference = read_reference_curve(reference_csv)
    axis.plot(reference[:, 0], reference[:, 1], "k:", label="published")
  if log_x:
    axis.set_xscale("log")
  axis.set_xlabel("training examples seen")
  axis.set_ylabel(f"{metric} (nats per example)" if metric in ("elbo", "log_likelihood") else metric)
  axis.grid(alpha=0.3)
  if axis.get_legend_handles_labels()[0]:  # A run too short to have logged the metric draws an empty plot.
    axis.legend(fontsize=7)
  figure.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path, dpi=120)
  plt.close(figure)
