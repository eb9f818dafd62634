"""Encoder and decoder networks shared by the VAE, the conditional VAE and the autoencoder.

An encoder maps images (and optionally a one-hot label) to the mean and log-variance of a diagonal
Gaussian; a decoder maps a latent code (and optionally the label) to the parameters of p(x | z) with
`outputs_per_pixel` numbers per pixel and channel (1 for logits or a fixed-variance mean, 2 for a mean and a
log-variance). Compute runs in `dtype` (bfloat16 for mixed precision); parameters stay float32 and outputs
are returned in float32 so the objective accumulates in float32.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "leaky_relu": nn.leaky_relu, "elu": nn.elu}


def kernel_init(init_std):
  """N(0, init_std²) weights as in Kingma & Welling (0.01); Flax's LeCun normal when init_std is None."""
  return nn.initializers.lecun_normal() if init_std is None else nn.initializers.normal(init_std)


def _with_label(h, label_onehot):
  return h if label_onehot is None else jnp.concatenate([h, label_onehot.astype(h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
  hidden_sizes: Sequence[int]
  latent_dim: int
  activation: str = "relu"
  init_std: Optional[float] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, label_onehot=None):
    h = _with_label(x.reshape(x.shape[0], -1).astype(self.dtype), label_onehot)
    for size in self.hidden_sizes:
      h = ACTIVATIONS[self.activation](nn.Dense(size, dtype=self.dtype, kernel_init=kernel_init(self.init_std))(h))
    stats = nn.Dense(2 * self.latent_dim, dtype=self.dtype, kernel_init=kernel_init(self.init_std))(h)
    mean, log_variance = jnp.split(stats.astype(jnp.float32), 2, axis=-1)
    return mean, log_variance


class MLPDecoder(nn.Module):
  hidden_sizes: Sequence[int]
  image_shape: Sequence[int]
  outputs_per_pixel: int = 1
  activation: str = "relu"
  init_std: Optional[float] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, label_onehot=None):
    h = _with_label(z.astype(self.dtype), label_onehot)
    for size in self.hidden_sizes:
      h = ACTIVATIONS[self.activation](nn.Dense(size, dtype=self.dtype, kernel_init=kernel_init(self.init_std))(h))
    height, width, channels = self.image_shape
    out = nn.Dense(height * width * channels * self.outputs_per_pixel, dtype=self.dtype,
                   kernel_init=kernel_init(self.init_std))(h)
    return out.astype(jnp.float32).reshape(*z.shape[:-1], height, width, channels * self.outputs_per_pixel)


class ConvEncoder(nn.Module):
  """Two stride-2 convolutions (H/4 × W/4) and a dense layer; for 28×28, 32×32 or 64×64 images."""
  latent_dim: int
  features: Sequence[int] = (32, 64)
  hidden_size: int = 256
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, label_onehot=None):
    act = ACTIVATIONS[self.activation]
    h = x.astype(self.dtype)
    if label_onehot is not None:  # The label as constant feature maps, so every filter can see it.
      maps = jnp.broadcast_to(label_onehot[:, None, None, :].astype(self.dtype), (*h.shape[:3], label_onehot.shape[-1]))
      h = jnp.concatenate([h, maps], axis=-1)
    for features in self.features:
      h = act(nn.Conv(features, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h))
    h = act(nn.Dense(self.hidden_size, dtype=self.dtype)(h.reshape(h.shape[0], -1)))
    stats = nn.Dense(2 * self.latent_dim, dtype=self.dtype)(h)
    mean, log_variance = jnp.split(stats.astype(jnp.float32), 2, axis=-1)
    return mean, log_variance


class ConvDecoder(nn.Module):
  """Dense to an (H/4, W/4) feature map, then two stride-2 transposed convolutions back to H × W."""
  image_shape: Sequence[int]
  outputs_per_pixel: int = 1
  features: Sequence[int] = (64, 32)
  hidden_size: int = 256
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, label_onehot=None):
    act = ACTIVATIONS[self.activation]
    height, width, channels = self.image_shape
    h = _with_label(z.astype(self.dtype), label_onehot)
    h = act(nn.Dense(self.hidden_size, dtype=self.dtype)(h))
    h = act(nn.Dense((height // 4) * (width // 4) * self.features[0], dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], height // 4, width // 4, self.features[0])
    h = act(nn.ConvTranspose(self.features[1], (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h))
    out = nn.ConvTranspose(channels * self.outputs_per_pixel, (4, 4), strides=(2, 2), padding="SAME",
                           dtype=self.dtype)(h)
    return out.astype(jnp.float32)
