"""Figures of the GAN family (headless matplotlib): toy scatter plots, the lecture's 1-D frame, GIFs.

Image grids reuse `gen_jax.plots.save_image_grid`; what is here has no use outside GANs.
"""

import glob
import os

import numpy as np
from PIL import Image

from gen_jax.plots import pyplot


def _save(figure, path):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path, dpi=90)
  pyplot().close(figure)


def save_scatter(path, real, generated, title, limits):
  """Real points (grey) under generated ones (blue) on fixed axes, so frames of a run line up."""
  figure, axis = pyplot().subplots(figsize=(4.2, 4.2))
  axis.scatter(real[:, 0], real[:, 1], s=2, c="0.7", label="data")
  axis.scatter(generated[:, 0], generated[:, 1], s=2, c="C0", alpha=0.5, label="generator")
  axis.set_xlim(limits[0][0], limits[1][0])
  axis.set_ylim(limits[0][1], limits[1][1])
  axis.set_aspect("equal")
  axis.set_title(title, fontsize=9)
  axis.legend(loc="upper right", fontsize=7, markerscale=4)
  figure.tight_layout()
  _save(figure, path)


def kernel_density(samples, x):
  """Gaussian kernel density estimate of 1-D `samples` at points `x`, Scott's bandwidth."""
  samples = np.asarray(samples, np.float64).ravel()
  bandwidth = max(1.06 * np.std(samples) * len(samples)**(-0.2), 1e-3)
  z = (np.asarray(x, np.float64)[:, None] - samples[None]) / bandwidth
  return np.mean(np.exp(-0.5 * z**2), axis=1) / (bandwidth * np.sqrt(2.0 * np.pi))


def save_density_frame(path, x, data_density, generator_density, discriminator, title, discriminator_label):
  """Goodfellow et al.'s figure 1: data density (black dots), generator density (green), D(x) (blue dashes).

  D shares the axis when it is a probability (the dashed line at ½ is the optimum); a raw critic score gets
  its own axis on the right.
  """
  figure, axis = pyplot().subplots(figsize=(6, 3.2))
  axis.plot(x, data_density, "k:", linewidth=2, label="data density")
  axis.plot(x, generator_density, "g-", label="generator density (KDE)")
  axis.set_ylim(0.0, max(1.05, 1.1 * float(np.max(data_density)), 1.1 * float(np.max(generator_density))))
  if discriminator is not None:
    if discriminator_label.startswith("D(x)"):
      axis.plot(x, discriminator, "b--", label=discriminator_label)
      axis.axhline(0.5, color="0.6", linewidth=0.8)
    else:
      critic_axis = axis.twinx()
      critic_axis.plot(x, discriminator, "b--", label=discriminator_label)
      critic_axis.set_ylabel(discriminator_label, fontsize=8)
  axis.set_xlabel("x")
  axis.set_title(title, fontsize=9)
  axis.legend(loc="upper left", fontsize=7)
  figure.tight_layout()
  _save(figure, path)


def save_gif(path, frame_pattern, seconds_per_frame=0.4):
  """An animated GIF of the PNG files matching `frame_pattern`, in name order; None when there are none.

  Written to a temporary name and renamed, so a kill never leaves a torn GIF.
  """
  frames = sorted(glob.glob(frame_pattern))
  if not frames:
    return None
  images = [Image.open(frame).convert("RGB") for frame in frames]
  temporary = path + ".tmp.gif"
  images[0].save(temporary, save_all=True, append_images=images[1:], duration=int(seconds_per_frame * 1000),
                 loop=0)
  os.replace(temporary, path)
  return path
