"""Encoder and decoder networks shared by the VAE, the conditional VAE and the autoencoder.

An encoder maps images (and optionally a one-hot label) to the mean and log-variance of a diagonal
Gaussian; a decoder maps a latent code (and optionally the label) to the parameters of p(x | z) with
`outputs_per_pixel` numbers per pixel and channel (1 for logits or a fixed-variance mean, 2 for a mean and a
log-variance). Compute runs in `dtype` (bfloat16 for mixed precision); parameters stay float32 and outputs
are returned in float32 so the objective accumulates in float32.
"""

from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from gen_jax.models import convolution

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "leaky_relu": nn.leaky_relu, "elu": nn.elu}


# name -> weight initialiser, for `--weight_init`. he_normal is PyTorch's kaiming_normal_ (untruncated
# N(0, 2/fan_in)), which the VampPrior and Exemplar-VAE code apply to every linear layer; Flax's own
# `he_normal` draws from a truncated normal instead.
WEIGHT_INITS = {
    "lecun_normal": nn.initializers.lecun_normal(),
    "he_normal": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
}


def kernel_init(init_std, weight_init="lecun_normal"):
  """N(0, init_std²) weights as in Kingma & Welling (0.01) when init_std is set; else `WEIGHT_INITS[weight_init]`."""
  return WEIGHT_INITS[weight_init] if init_std is None else nn.initializers.normal(init_std)


class GatedDense(nn.Module):
  """(W₁x + b₁) ⊙ σ(W₂x + b₂): the gated linear unit (Dauphin et al. 2017) the VampPrior models are built of.

  W₁ and W₂ stay two parameters (a per-parameter gradient normaliser sees them apart, as in the reference),
  but run as one matmul against their concatenation: one (in, 2·out) product is faster than two (in, out) ones.
  """
  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = (x.shape[-1], self.features)
    kernels = [self.param(name, self.kernel_init, shape) for name in ("linear_kernel", "gate_kernel")]
    biases = [self.param(name, nn.initializers.zeros, (self.features,)) for name in ("linear_bias", "gate_bias")]
    both = x @ jnp.concatenate(kernels, axis=1).astype(self.dtype) + jnp.concatenate(biases).astype(self.dtype)
    linear, gate = jnp.split(both, 2, axis=-1)
    return linear * nn.sigmoid(gate)


def _dense_layer(h, size, activation, init, dtype):
  return ACTIVATIONS[activation](nn.Dense(size, dtype=dtype, kernel_init=init)(h))


def _gated_layer(h, size, activation, init, dtype):
  del activation  # The sigmoid gate is the nonlinearity.
  return GatedDense(size, init, dtype)(h)


# name -> hidden layer (h, size, activation, kernel init, dtype) -> h', for `--hidden_layer`; called inside
# a compact module, so the layer's parameters belong to that module.
HIDDEN_LAYERS = {"dense": _dense_layer, "gated": _gated_layer}


def clamp_log_variance(log_variance, log_variance_range):
  """Hard tanh of the log-variance to [low, high] (the VampPrior code's [−6, 2]); unchanged when the range is ()."""
  return jnp.clip(log_variance, *log_variance_range) if log_variance_range else log_variance


def with_label(h, label_onehot):
  """h with the one-hot label concatenated on its last axis; h itself without a label."""
  return h if label_onehot is None else jnp.concatenate([h, label_onehot.astype(h.dtype)], axis=-1)


def with_label_planes(images, label_onehot):
  """(batch, H, W, C) images with the one-hot label as constant feature maps on the channel axis, so that every
  filter can see it; the images themselves without a label."""
  if label_onehot is None:
    return images
  planes = label_onehot[:, None, None, :].astype(images.dtype)
  return jnp.concatenate([images, jnp.broadcast_to(planes, (*images.shape[:3], label_onehot.shape[-1]))], axis=-1)


class MLPEncoder(nn.Module):
  """Images (or any (batch, ...) input) to the mean and log-variance of a diagonal Gaussian."""
  hidden_sizes: Sequence[int]
  latent_dim: int
  activation: str = "relu"
  init_std: Optional[float] = None
  dtype: jnp.dtype = jnp.float32
  hidden_layer: str = "dense"
  weight_init: str = "lecun_normal"
  log_variance_range: Tuple[float, ...] = ()  # (low, high): the log-variance is clamped to it.

  @nn.compact
  def __call__(self, x, label_onehot=None):
    init = kernel_init(self.init_std, self.weight_init)
    h = with_label(x.reshape(x.shape[0], -1).astype(self.dtype), label_onehot)
    for size in self.hidden_sizes:
      h = HIDDEN_LAYERS[self.hidden_layer](h, size, self.activation, init, self.dtype)
    stats = nn.Dense(2 * self.latent_dim, dtype=self.dtype, kernel_init=init)(h)
    mean, log_variance = jnp.split(stats.astype(jnp.float32), 2, axis=-1)
    return mean, clamp_log_variance(log_variance, self.log_variance_range)


class MLPDecoder(nn.Module):
  hidden_sizes: Sequence[int]
  image_shape: Sequence[int]
  outputs_per_pixel: int = 1
  activation: str = "relu"
  init_std: Optional[float] = None
  dtype: jnp.dtype = jnp.float32
  hidden_layer: str = "dense"
  weight_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, z, label_onehot=None):
    init = kernel_init(self.init_std, self.weight_init)
    h = with_label(z.astype(self.dtype), label_onehot)
    for size in self.hidden_sizes:
      h = HIDDEN_LAYERS[self.hidden_layer](h, size, self.activation, init, self.dtype)
    height, width, channels = self.image_shape
    out = nn.Dense(height * width * channels * self.outputs_per_pixel, dtype=self.dtype, kernel_init=init)(h)
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
    h = with_label_planes(x.astype(self.dtype), label_onehot)
    for features in self.features:
      h = act(convolution.Conv(features, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h))
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
    h = with_label(z.astype(self.dtype), label_onehot)
    h = act(nn.Dense(self.hidden_size, dtype=self.dtype)(h))
    h = act(nn.Dense((height // 4) * (width // 4) * self.features[0], dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], height // 4, width // 4, self.features[0])
    h = act(convolution.ConvTranspose(self.features[1], (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h))
    out = convolution.ConvTranspose(channels * self.outputs_per_pixel, (4, 4), strides=(2, 2), padding="SAME",
                                    dtype=self.dtype)(h)
    return out.astype(jnp.float32)
