"""Pixel preprocessing applied on device by the training code (pure JAX functions).

Binarisation follows the VAE literature: "dynamic" draws fresh Bernoulli pixels with p = intensity for
every batch (Burda et al. 2016, IWAE), "static" draws once and keeps that draw for the whole run.
"""

import jax
import jax.numpy as jnp
import numpy as np


def to_unit_interval(images_uint8: jax.Array) -> jax.Array:
  """uint8 pixels in [0, 255] -> float32 in [0, 1]."""
  return jnp.asarray(images_uint8, jnp.float32) / 255.0


def binarize_dynamic(key: jax.Array, x01: jax.Array) -> jax.Array:
  """Draws each pixel from Bernoulli(p = x01); float32 in {0, 1}. Pass a fresh key per batch."""
  return jax.random.bernoulli(key, x01).astype(jnp.float32)


def binarize_static(seed: int, images_uint8: np.ndarray) -> np.ndarray:
  """One fixed Bernoulli(p = pixel / 255) draw of a whole dataset; uint8 in {0, 255}.

  Done once on the host, before training, so the same seed gives the same binary dataset.
  """
  images = np.asarray(images_uint8)
  rng = np.random.default_rng(seed)
  draw = rng.random(images.shape, dtype=np.float32) * 255.0 < images
  return draw.astype(np.uint8) * 255
