"""Encoder and decoder networks shared by the VAE, the conditional VAE and the autoencoder.

An encoder maps images (and optionally a one-hot label) to the mean and log-variance of a diagonal
Gaussian; a decoder maps a latent code (and optionally the label) to the parameters of p(x | z) with
`outputs_per_pixel` numbers per pixel and channel (1 for logits or a fixed-variance mean, 2 for a mean and a
log-variance). Compute runs in `dtype` (bfloat16 for mixed precision); parameters stay float32 and outputs
are returned in float32 so the objective accumulates in float32.
"""

from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
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


def side_by_side_dense(module, x, features, names, kernel_init, dtype):
  """Dense layers of `features` outputs each, one per name in `names`, all of the input x, created as
  parameters <name>_kernel and <name>_bias of `module` (called inside its compact method).

  They stay separate parameters, so that a per-parameter gradient normaliser (`--optimizer=adam_norm_grad`)
  sees them apart, as it sees the reference's separate layers; but they run as one matmul against their
  concatenation, since one (in, n·out) product is faster than n (in, out) ones. Returns their outputs."""
  shape = (x.shape[-1], features)
  kernels = [module.param(f"{name}_kernel", kernel_init, shape) for name in names]
  biases = [module.param(f"{name}_bias", nn.initializers.zeros, (features,)) for name in names]
  both = x @ jnp.concatenate(kernels, axis=1).astype(dtype) + jnp.concatenate(biases).astype(dtype)
  return jnp.split(both, len(names), axis=-1)


class GatedDense(nn.Module):
  """(W₁x + b₁) ⊙ σ(W₂x + b₂): the gated linear unit (Dauphin et al. 2017) the VampPrior models are built of.
  W₁ and W₂ are two parameters run as one matmul (`side_by_side_dense`)."""
  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    linear, gate = side_by_side_dense(self, x, self.features, ("linear", "gate"), self.kernel_init, self.dtype)
    return linear * nn.sigmoid(gate)


class GaussianHead(nn.Module):
  """The mean and the log-variance (clamped to `log_variance_range` when given) of a diagonal Gaussian, two
  linear maps of the features h, returned in float32.

  Two parameters, not one layer of 2·latent outputs split in half: the per-parameter gradient normaliser must
  scale each by its own gradient's norm, as it does the VampPrior code's separate `q_z_mean` and
  `q_z_logvar` layers (one shared norm would scale each head's step by the other's gradient). Checkpoints
  saved with that one fused layer still restore (`LEGACY_LAYOUTS`)."""
  latent_dim: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  log_variance_range: Tuple[float, ...] = ()
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h):
    mean, log_variance = side_by_side_dense(self, h, self.latent_dim, ("mean", "log_variance"), self.kernel_init,
                                            self.dtype)
    return mean.astype(jnp.float32), clamp_log_variance(log_variance.astype(jnp.float32), self.log_variance_range)


def _dense_layer(h, size, activation, init, dtype):
  return ACTIVATIONS[activation](nn.Dense(size, dtype=dtype, kernel_init=init)(h))


def _gated_layer(h, size, activation, init, dtype):
  del activation  # The sigmoid gate is the nonlinearity.
  return GatedDense(size, init, dtype)(h)


# name -> hidden layer (h, size, activation, kernel init, dtype) -> h', for `--hidden_layer`; called inside
# a compact module, so the layer's parameters belong to that module.
HIDDEN_LAYERS = {"dense": _dense_layer, "gated": _gated_layer}

HEAD = "gaussian_head"  # Every encoder's GaussianHead is named so: the legacy layouts below find it by name.


def _is_head_scope(node):
  return isinstance(node, dict) and HEAD in node


def _fused_head_index(scope):
  """The fused head was the last nn.Dense its module created, so it was numbered after the scope's others."""
  return sum(name.startswith("Dense_") for name in scope)


def _concatenated(first, second):
  if isinstance(first, jax.ShapeDtypeStruct):  # A restore target: the fused layer's shape.
    return jax.ShapeDtypeStruct((*first.shape[:-1], first.shape[-1] + second.shape[-1]), first.dtype,
                                sharding=first.sharding)
  return jnp.concatenate([first, second], axis=-1)


def _fuse_head(scope):
  head = scope[HEAD]
  fused = {part: _concatenated(head[f"mean_{part}"], head[f"log_variance_{part}"]) for part in ("kernel", "bias")}
  return {**{name: value for name, value in scope.items() if name != HEAD}, f"Dense_{_fused_head_index(scope)}": fused}


def _split_head(target_scope, legacy_scope):
  fused_name = f"Dense_{_fused_head_index(target_scope)}"
  head = {}
  for part in ("kernel", "bias"):
    head[f"mean_{part}"], head[f"log_variance_{part}"] = jnp.split(legacy_scope[fused_name][part], 2, axis=-1)
  return {**{name: value for name, value in legacy_scope.items() if name != fused_name}, HEAD: head}


def with_fused_heads(tree):
  """`tree` (parameters, or a TrainState whose optimizer state mirrors them) as saved before GaussianHead:
  each head one nn.Dense of 2·latent outputs (μ first), numbered after its module's other Dense layers."""
  return jax.tree.map(lambda node: _fuse_head(node) if _is_head_scope(node) else node, tree, is_leaf=_is_head_scope)


def with_split_heads(target, legacy_tree):
  """The inverse of `with_fused_heads`: `legacy_tree` in the layout of `target` (a tree of the current layout,
  abstract or not, that says where the heads are)."""
  return jax.tree.map(lambda node, legacy: _split_head(node, legacy) if _is_head_scope(node) else legacy, target,
                      legacy_tree, is_leaf=_is_head_scope)


# Parameter layouts of earlier versions that checkpoints may hold, as (to the old layout, back from it): the
# checkpointer restores such a checkpoint into the old layout and converts it, so no saved run is lost.
LEGACY_LAYOUTS = {"one fused Dense layer for a Gaussian's mean and log-variance": (with_fused_heads,
                                                                                    with_split_heads)}


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
    return GaussianHead(self.latent_dim, init, self.log_variance_range, self.dtype, name=HEAD)(h)


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
    return GaussianHead(self.latent_dim, dtype=self.dtype, name=HEAD)(h)


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
