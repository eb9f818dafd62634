"""The numbers behind scripts/figures.py: pure functions of arrays, no run, no files, no plotting.

Kept apart from the figures so that each can be checked against brute force or a closed form on tiny arrays
(tests/test_figures.py) and so that figures.py holds only what reads runs and draws.
"""

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import objectives


def interpolation_paths(encode_mean, decode_mean, x_a, x_b, ts):
  """Decodes of (1 − t)·μ(x_a) + t·μ(x_b): (pairs, len(ts), H, W, C)."""
  z_a, z_b = encode_mean(x_a), encode_mean(x_b)
  z = (1.0 - ts[None, :, None]) * z_a[:, None] + ts[None, :, None] * z_b[:, None]
  decoded = decode_mean(z.reshape(-1, z.shape[-1]).astype(np.float32))
  return decoded.reshape(len(x_a), len(ts), *decoded.shape[1:])


def cross_fade(x_a, x_b, ts):
  """Pixel-space mixing (1 − t)·x_a + t·x_b: the ghosted images a good code space avoids."""
  return (1.0 - ts[None, :, None, None, None]) * x_a[:, None] + ts[None, :, None, None, None] * x_b[:, None]


def pairs_of_different_classes(num_images, labels, count, seed):
  """`count` index pairs (a, b) of `num_images` images, drawn with a fixed seed: of different labels where
  the images have labels of at least two classes, of different images otherwise."""
  rng = np.random.default_rng(seed)
  apart = labels if labels is not None and len(np.unique(labels)) > 1 else np.arange(num_images)
  first, second = [], []
  while len(first) < count:
    a, b = rng.integers(0, num_images, size=2)
    if apart[a] != apart[b]:
      first.append(a)
      second.append(b)
  return np.asarray(first), np.asarray(second)


def top_probability(logits):
  """The top softmax probability of each row of logits (a classifier's confidence)."""
  return np.max(np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1)), axis=-1)


def manifold_codes(grid_size):
  """A grid_size² grid of z = Φ⁻¹(u), u at the cell centres of (0, 1)²: equal prior mass per cell."""
  u = (np.arange(grid_size, dtype=np.float32) + 0.5) / grid_size
  z = np.asarray(jax.scipy.special.ndtri(jnp.asarray(u)))
  # Rows go down the image: the top row has the largest z₂, as on a plot's y axis.
  return np.stack(np.meshgrid(z, z[::-1]), axis=-1).reshape(-1, 2)


def nearest_neighbours(queries, references, chunk=2000):
  """(index, Euclidean distance) of each query's nearest reference, images flattened."""
  q = jnp.asarray(queries.reshape(len(queries), -1))
  q_norms = jnp.sum(q**2, axis=1)
  best_index, best_distance = None, None
  for start in range(0, len(references), chunk):
    r = jnp.asarray(references[start:start + chunk].reshape(-1, q.shape[1]))
    squared = q_norms[:, None] - 2.0 * q @ r.T + jnp.sum(r**2, axis=1)[None]
    index, distance = np.asarray(jnp.argmin(squared, axis=1)), np.asarray(jnp.min(squared, axis=1))
    if best_index is None:
      best_index, best_distance = index + start, distance
    else:
      better = distance < best_distance
      best_index = np.where(better, index + start, best_index)
      best_distance = np.where(better, distance, best_distance)
  return best_index, np.sqrt(np.maximum(best_distance, 0.0))


def total_variation(images):
  """Mean absolute difference of horizontally and vertically neighbouring pixels, per image."""
  dx = np.abs(np.diff(images, axis=2)).mean(axis=(1, 2, 3))
  dy = np.abs(np.diff(images, axis=1)).mean(axis=(1, 2, 3))
  return 0.5 * (dx + dy)


def kl_curve_values(log_variances):
  """exp(s), 1 + s and their difference for s = log σ², the difference from the training KL itself.

  With μ = 0, `objectives.kl_to_standard_normal` is ½(exp(s) − (1 + s)) per dimension, so twice it is the
  lecture's exp(σ) − (1 + σ) curve.
  """
  s = np.asarray(log_variances, np.float32)
  kl = objectives.kl_to_standard_normal(jnp.zeros((len(s), 1)), jnp.asarray(s)[:, None])
  return np.exp(s), 1.0 + s, 2.0 * np.asarray(kl)
