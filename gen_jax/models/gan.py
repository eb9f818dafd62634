"""Generators and discriminators: MLPs for vectors, DCGAN-style convolutional networks for images.

Decisions written down:
- Generators end in `output_activation` ("tanh" for images scaled to [−1, 1], "none" for toy points);
  discriminators return one raw output per example (a logit or a critic score; the loss interprets it).
- Batch normalisation (`normalization="batch"`) always normalises with the statistics of the batch at
  hand, at training and at sampling time, as the DCGAN reference code does in practice. Running averages
  would have to be kept in step with the EMA of the generator's weights used for evaluation; batch
  statistics need nothing of the sort (samples are drawn in chunks of hundreds). Flax still records
  running averages in the `batch_stats` collection; they travel in the state and its checkpoints (the
  collection also holds spectral norm's vectors) but nothing reads them.
- Spectral normalisation (Miyato et al. 2018) wraps every discriminator layer with `nn.SpectralNorm`,
  whose power-iteration vectors live in the `batch_stats` collection and advance only when
  `update_stats=True` (the discriminator's own step), so a frozen discriminator stays bit-identical.
- Conditional variants: with `num_classes` set, the label reaches both networks in one of two ways
  (`conditioning`, the table CONDITIONINGS):
  - "concat": the one-hot label is concatenated to z in the generator, and to the input of the
    discriminator (as constant feature maps for images, whose share of D's first convolution is computed as
    one map per label: `convolution.label_planes_conv`);
  - "projection" (Miyato & Koyama 2018, "cGANs with Projection Discriminator"): the generator's batch
    normalisations are class-conditional (normalise, then a per-class scale γ_y and shift β_y, learned
    embeddings initialised to 1 and 0; de Vries et al. 2017), and the discriminator's output is
    ψ(φ(x)) + ⟨e_y, φ(x)⟩, the inner product of a learned class embedding with its last features.
- PacGAN packing (Lin et al. 2018): with `packing=m` the discriminator judges m examples at once, given as
  consecutive rows of its input (batch divisible by m): vectors are concatenated, images are stacked along
  the channel axis. It returns one output per pack.
"""

import dataclasses
import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.models import convolution, networks
from gen_jax.models.networks import ACTIVATIONS

NORMALIZATIONS = ("none", "batch")
OUTPUT_ACTIVATIONS = {"none": lambda x: x, "tanh": jnp.tanh}


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """Where a conditional GAN's label enters (see the module docstring): `in_input`, the one-hot label joins
  G's z and D's input; `class_batch_norm`, G's batch norms take a per-class scale and shift; `projection`, D's
  output adds ⟨e_y, φ(x)⟩."""
  in_input: bool = False
  class_batch_norm: bool = False
  projection: bool = False


CONDITIONINGS = {"concat": Conditioning(in_input=True),
                 "projection": Conditioning(class_batch_norm=True, projection=True)}
_UNCONDITIONAL = Conditioning()


def _conditioning(num_classes, name):
  return _UNCONDITIONAL if num_classes is None else CONDITIONINGS[name]


def _input_label(labels, num_classes, conditioning):
  """The one-hot label when it joins the networks' input; None otherwise."""
  if not _conditioning(num_classes, conditioning).in_input:
    return None
  return jax.nn.one_hot(labels, num_classes)


def _with_label(h, labels, num_classes, conditioning="concat"):
  return networks.with_label(h, _input_label(labels, num_classes, conditioning))


class ConditionalBatchNorm(nn.Module):
  """Batch normalisation whose scale and shift are looked up per class: γ_y ⊙ BN(h) + β_y."""
  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h, labels):
    normalized = nn.BatchNorm(use_running_average=False, use_scale=False, use_bias=False, dtype=self.dtype)(h)
    features = h.shape[-1]
    scale = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.ones, name="scale")(labels)
    shift = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros, name="shift")(labels)
    broadcast = (slice(None),) + (None,) * (h.ndim - 2)  # Over the spatial axes of feature maps.
    return normalized * scale[broadcast].astype(self.dtype) + shift[broadcast].astype(self.dtype)


def _normalize(h, normalization, dtype, labels=None, num_classes=None, conditioning="concat"):
  """The layer's normalisation; class-conditional batch norm for a projection-conditioned generator."""
  if normalization != "batch":
    return h
  if _conditioning(num_classes, conditioning).class_batch_norm:
    return ConditionalBatchNorm(num_classes, dtype)(h, labels)
  return nn.BatchNorm(use_running_average=False, dtype=dtype)(h)


def _output(features, labels, num_classes, conditioning, spectral_norm, update_stats, dtype):
  """One raw output per example from the last features: ψ(φ) and, for projection, + ⟨e_y, φ⟩."""
  out = _layer(nn.Dense(1, dtype=dtype), spectral_norm, update_stats)(features)[:, 0]
  if _conditioning(num_classes, conditioning).projection:
    # The class embeddings e_y are the rows of a (classes, features) matrix applied to one-hot labels, so
    # spectral normalisation covers them as it covers every other layer of D (as in the paper).
    embed = nn.Dense(features.shape[-1], use_bias=False, dtype=dtype, name="class_projection")
    embedded = _layer(embed, spectral_norm, update_stats)(jax.nn.one_hot(labels, num_classes, dtype=dtype))
    out = out + jnp.sum(embedded * features, axis=-1)
  return out.astype(jnp.float32)


def _pack(h, packing):
  """(B, *shape) -> (B/m, m, *shape): consecutive examples form a pack."""
  return h.reshape(h.shape[0] // packing, packing, *h.shape[1:])


def _layer(layer, spectral_norm, update_stats):
  """`layer` as a callable, wrapped in spectral normalisation when asked."""
  if not spectral_norm:
    return layer
  normalized = nn.SpectralNorm(layer)
  return lambda h: normalized(h, update_stats=update_stats)


class MLPGenerator(nn.Module):
  """z (and a label) -> an example of `output_shape` through dense layers."""
  hidden_sizes: Sequence[int]
  output_shape: Sequence[int]
  activation: str = "relu"
  output_activation: str = "none"
  normalization: str = "none"
  num_classes: Optional[int] = None
  dtype: jnp.dtype = jnp.float32
  conditioning: str = "concat"

  @nn.compact
  def __call__(self, z, labels=None):
    h = _with_label(z.astype(self.dtype), labels, self.num_classes, self.conditioning)
    for size in self.hidden_sizes:
      h = ACTIVATIONS[self.activation](_normalize(nn.Dense(size, dtype=self.dtype)(h), self.normalization,
                                                  self.dtype, labels, self.num_classes, self.conditioning))
    size = 1
    for side in self.output_shape:
      size *= side
    out = nn.Dense(size, dtype=self.dtype)(h).astype(jnp.float32)
    return OUTPUT_ACTIVATIONS[self.output_activation](out).reshape(z.shape[0], *self.output_shape)


class MLPDiscriminator(nn.Module):
  """An example (or a pack of m) -> one raw output, through dense layers."""
  hidden_sizes: Sequence[int]
  activation: str = "leaky_relu"
  normalization: str = "none"
  spectral_norm: bool = False
  packing: int = 1
  num_classes: Optional[int] = None
  dtype: jnp.dtype = jnp.float32
  conditioning: str = "concat"

  @nn.compact
  def __call__(self, x, labels=None, update_stats=False):
    h = _with_label(x.reshape(x.shape[0], -1).astype(self.dtype), labels, self.num_classes, self.conditioning)
    h = _pack(h, self.packing).reshape(h.shape[0] // self.packing, -1)
    for size in self.hidden_sizes:
      h = _layer(nn.Dense(size, dtype=self.dtype), self.spectral_norm, update_stats)(h)
      h = ACTIVATIONS[self.activation](_normalize(h, self.normalization, self.dtype))
    return _output(h, labels, self.num_classes, self.conditioning, self.spectral_norm, update_stats, self.dtype)


def num_resolution_levels(side):
  """How many stride-2 stages take an image side down to the DCGAN's small starting map.

  Halve while the side is even and above 8: 28 -> 14 -> 7 (2), 32 -> 16 -> 8 (2), 64 -> 32 -> 16 -> 8 (3).
  """
  levels = 0
  while side % 2 == 0 and side > 8:
    side //= 2
    levels += 1
  return levels


class DCGANGenerator(nn.Module):
  """Radford et al. 2016: dense to a small map, stride-2 4×4 transposed convolutions, tanh output.

  Widths halve at each doubling of resolution, ending in `base_features` before the output layer: for
  28×28 (base 64) dense -> 7×7×128 -> 14×14×64 -> 28×28×C. Normalisation and ReLU after every layer but
  the last; after the dense layer the batch norm is per unit, before the reshape (the TensorFlow DCGAN
  tutorial's choice; PyTorch's example starts with a 1×1 -> 4×4 transposed convolution normalised per channel).
  Kept so: every DCGAN figure in the README and docs/gan_runs.md was measured with it.
  """
  image_shape: Sequence[int]
  base_features: int = 64
  normalization: str = "batch"
  num_classes: Optional[int] = None
  dtype: jnp.dtype = jnp.float32
  conditioning: str = "concat"

  @nn.compact
  def __call__(self, z, labels=None):
    height, width, channels = self.image_shape
    levels = num_resolution_levels(min(height, width))
    if levels == 0:
      raise ValueError(f"image shape {tuple(self.image_shape)} has no even side above 8 to upsample to")
    features = self.base_features * 2**(levels - 1)
    normalize = functools.partial(_normalize, normalization=self.normalization, dtype=self.dtype, labels=labels,
                                  num_classes=self.num_classes, conditioning=self.conditioning)
    h = _with_label(z.astype(self.dtype), labels, self.num_classes, self.conditioning)
    h = nn.Dense((height >> levels) * (width >> levels) * features, dtype=self.dtype)(h)
    h = nn.relu(normalize(h))
    h = h.reshape(h.shape[0], height >> levels, width >> levels, features)
    for level in range(levels - 1):
      h = convolution.ConvTranspose(features >> (level + 1), (4, 4), strides=(2, 2), padding="SAME",
                                    dtype=self.dtype)(h)
      h = nn.relu(normalize(h))
    out = convolution.ConvTranspose(channels, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)(h)
    return jnp.tanh(out.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
  """Stride-2 4×4 convolutions with LeakyReLU(0.2), widths doubling from `base_features`, then one output.

  No normalisation on the first layer (DCGAN's choice: it would erase the input's own scale).
  """
  base_features: int = 64
  normalization: str = "batch"
  spectral_norm: bool = False
  packing: int = 1
  num_classes: Optional[int] = None
  dtype: jnp.dtype = jnp.float32
  conditioning: str = "concat"

  @nn.compact
  def __call__(self, x, labels=None, update_stats=False):
    label_onehot = _input_label(labels, self.num_classes, self.conditioning)
    h = networks.with_label_planes(x.astype(self.dtype), label_onehot)
    packs = _pack(h, self.packing)  # (B/m, m, H, W, C): stack the pack's images along the channels.
    h = jnp.moveaxis(packs, 1, -2).reshape(*packs.shape[:1], *packs.shape[2:4], -1)
    # The first layer convolves the label planes as one map per label (exact; a pack interleaves its
    # examples' planes with their images, so packs take the plain convolution).
    planes = (label_onehot is not None and self.packing == 1
              and convolution.label_planes_conv(labels, self.num_classes))
    for level in range(num_resolution_levels(min(x.shape[1], x.shape[2]))):
      conv = convolution.Conv(self.base_features * 2**level, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                              convolution=planes if level == 0 else None)
      h = _layer(conv, self.spectral_norm, update_stats)(h)
      if level > 0:
        h = _normalize(h, self.normalization, self.dtype)
      h = nn.leaky_relu(h, 0.2)
    return _output(h.reshape(h.shape[0], -1), labels, self.num_classes, self.conditioning, self.spectral_norm,
                   update_stats, self.dtype)
