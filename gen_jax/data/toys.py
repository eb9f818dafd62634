"""Low-dimensional Gaussian mixtures for GANs: the lecture's 1-D picture and the mode-collapse benchmarks.

A toy set has no files and no epochs: every batch is a fresh draw from the distribution, made on the
device from the step's key. The 2-D sets follow the PacGAN/VEEGAN protocol (README, "Mode coverage"):
- `ring`: 8 equally weighted Gaussians at (cos 2πi/8, sin 2πi/8), std 0.01;
- `grid`: 25 equally weighted Gaussians at {−4, −2, 0, 2, 4}², std 0.05;
- `mixture_1d`: the 1-D illustration, two equally weighted Gaussians at ±2 with std 0.5. Two well separated
  modes make the figure say something (a generator that covers only one is visible at a glance) while
  staying easy enough for a small MLP GAN to fit in a few thousand steps.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """Equally weighted isotropic Gaussians with one shared standard deviation."""
  name: str
  means: np.ndarray  # (num_modes, dim)
  std: float

  @property
  def dim(self):
    return self.means.shape[1]

  @property
  def num_modes(self):
    return self.means.shape[0]

  def sample(self, key, num_samples):
    """(num_samples, dim) float32 points: a uniformly chosen mode plus N(0, std²) noise."""
    mode_key, noise_key = jax.random.split(key)
    modes = jax.random.randint(mode_key, (num_samples,), 0, self.num_modes)
    noise = jax.random.normal(noise_key, (num_samples, self.dim), jnp.float32)
    return jnp.asarray(self.means, jnp.float32)[modes] + self.std * noise

  def density(self, x):
    """p(x) for points x of shape (n, dim), in numpy (for figures)."""
    x = np.asarray(x, np.float64)
    squared = np.sum((x[:, None, :] - self.means[None]) ** 2, axis=-1)
    normaliser = (2.0 * math.pi * self.std**2) ** (self.dim / 2.0)
    return np.mean(np.exp(-0.5 * squared / self.std**2), axis=1) / normaliser

  def support(self, margin_stds=4.0):
    """(low, high) per dimension covering every mode ± `margin_stds` standard deviations."""
    return self.means.min(axis=0) - margin_stds * self.std, self.means.max(axis=0) + margin_stds * self.std


def _ring():
  angles = 2.0 * np.pi * np.arange(8) / 8
  return GaussianMixture("ring", np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.01)


def _grid():
  side = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
  return GaussianMixture("grid", np.stack(np.meshgrid(side, side, indexing="ij"), -1).reshape(-1, 2), 0.05)


def _mixture_1d():
  return GaussianMixture("mixture_1d", np.array([[-2.0], [2.0]]), 0.5)


TOY_DATASETS = {"mixture_1d": _mixture_1d, "ring": _ring, "grid": _grid}


def is_toy(dataset):
  return dataset in TOY_DATASETS


def load_toy(dataset):
  """The toy distribution named `dataset`."""
  if dataset not in TOY_DATASETS:
    raise UserError(f"unknown toy dataset {dataset!r}; allowed: {', '.join(TOY_DATASETS)}")
  return TOY_DATASETS[dataset]()
