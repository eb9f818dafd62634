"""Convolutions for the CPU, where XLA's own convolution kernels are slow for some forms.

Measured here (2 cores, batch 64, the DCGAN's layers): XLA:CPU runs a strided convolution and its
gradients well outside a loop, but pathologically inside `lax.scan` (~10x, JAX issue #12868), and the kernel
gradient of a transposed convolution (an input-dilated one) ~40x slower than the same FLOPs as a matmul
(186 ms against 4 ms for the forward of G's 128 -> 64 layer). So on the CPU:
- every convolution without input dilation (strided or not, any kernel) is **patches + matmul** (im2col):
  the kh·kw (strided) slices of the padded input side by side along the channels, times the kernel as a
  (kh·kw·C_in, C_out) matrix, at the price of a patch tensor kh·kw times the input's size. Its gradients are a
  matmul and pads (the input's) and a matmul formed in the orientation XLA:CPU runs fastest (the kernel's,
  `_weight_gradient`: the DCGAN step went from 688 to 746 examples/s), and it stays fast inside a scan.
  When each kernel side is a multiple of its stride the patches are built from s×s blocks (`_block_patches`:
  fewer, wider copies; the DCGAN step gained 0.4–4.8% in four alternated runs). (Folding the blocks into the
  channels and convolving them 2×2 at stride 1 measured no faster: 783 against 785 examples/s);
- an input-dilated convolution (what `ConvTranspose` runs) keeps XLA's forward, with a custom VJP that takes
  both gradients from the stride-s patches of the output gradient, one matmul each: the kernel gradient is the
  input's pixels against them, the input gradient is them against the flipped kernel. (XLA's own input
  gradient, a strided convolution, ran G's 128 -> 64 layer at half the matmul rate: 9.4 ms inside the G step
  against ~4.2 ms for the same FLOPs as a matmul; the whole DCGAN step went from 617 to 647 examples/s.)
Both compute what `lax.conv_general_dilated` computes (tested equal, forward and both gradients, in
tests/test_convolution.py); they are chosen by backend (`CONVOLUTIONS_BY_BACKEND`), so GPUs and TPUs keep
XLA's own convolutions. `Conv` and `ConvTranspose` are Flax's modules with the convolution swapped: the
same parameter names, shapes and initialisers, so a checkpoint does not care which ran.
"""

import contextlib
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

NHWC_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(lhs, rhs, dimension_numbers):
  """Whether `dimension_numbers` (names or lax.ConvDimensionNumbers, as Flax passes; None is lax's NCHW default)
  mean NHWC/HWIO/NHWC."""
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_DIMENSIONS)
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def _explicit_padding(padding, input_sizes, kernel_sizes, strides):
  """((low, high), ...) per spatial axis, hashable (the custom VJPs take it as a static argument)."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(input_sizes, kernel_sizes, strides, padding)
  return tuple(tuple(pair) for pair in padding)


def _block_patches(canvas, kernel_size, strides, grid):
  """`_extract_patches` when every kernel side is a multiple of its stride (k = A·s, s > 1: the DCGAN's 4×4,
  stride 2). Cut into s×s blocks, tap t = s·a + r of output o is phase r of block o + a, so the patches are
  A_h·A_w shifted slices of the block image, interleaved with one transpose: 4 wide copies instead of 16 strided
  ones, 2.2 against 4.7 ms for D's 64 -> 128 layer. Autodiff's transpose of it scatters the same way."""
  batch, channels = canvas.shape[0], canvas.shape[-1]
  blocks = [kernel // stride for kernel, stride in zip(kernel_size, strides)]
  spans = [stride * (side + count - 1) for stride, side, count in zip(strides, grid, blocks)]
  image = canvas[:, :spans[0], :spans[1]].reshape(batch, spans[0] // strides[0], strides[0],
                                                  spans[1] // strides[1], strides[1], channels)
  shifted = jnp.stack([jnp.stack([image[:, a:a + grid[0], :, b:b + grid[1]] for b in range(blocks[1])])
                       for a in range(blocks[0])])
  # (A_h, A_w, B, grid_h, s_h, grid_w, s_w, C) -> (B, grid_h, grid_w, A_h, s_h, A_w, s_w, C): taps in (t_y, t_x)
  # order, as the kernel's rows are.
  return jnp.transpose(shifted, (2, 3, 5, 0, 4, 1, 6, 7)).reshape(batch, grid[0], grid[1], -1)


def _extract_patches(canvas, kernel_size, strides, grid):
  """patches[b, o, t·C + c] = canvas[b, s·o + t, c] over the grid's positions o and the kernel's taps t (2-D):
  the kh·kw strided slices of the canvas side by side along the channels (built from s×s blocks where the
  kernel allows, `_block_patches`)."""
  if tuple(strides) != (1, 1) and all(kernel % stride == 0 for kernel, stride in zip(kernel_size, strides)):
    return _block_patches(canvas, kernel_size, strides, grid)
  batch, _, _, channels = canvas.shape
  taps = [lax.slice(canvas, (0, ty, tx, 0),
                    (batch, ty + strides[0] * (grid[0] - 1) + 1, tx + strides[1] * (grid[1] - 1) + 1, channels),
                    (1, strides[0], strides[1], 1))
          for ty in range(kernel_size[0]) for tx in range(kernel_size[1])]
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _padded_patches(lhs, kernel_size, strides, padding):
  """The patches of `lhs` padded by `padding` ((low, high) per spatial axis), one per output position."""
  padded = lax.pad(lhs, jnp.zeros((), lhs.dtype), [(0, 0, 0), *[(*pads, 0) for pads in padding], (0, 0, 0)])
  grid = [(side - kernel) // stride + 1 for side, kernel, stride in zip(padded.shape[1:3], kernel_size, strides)]
  return _extract_patches(padded, kernel_size, strides, grid)


def _weight_gradient(inputs, out_gradient, precision):
  """Σ_n inputs[n] ⊗ out_gradient[n] over every leading position: a matmul's weight gradient, (a, b) for
  (..., a) inputs and (..., b) gradients, summed in float32. Over a convolution's thousands of positions XLA:CPU
  ran this contraction 1.2-1.9× faster with the wider of a and b as the product's minor axis (measured for
  (n, a, b) = (3136, 1024, 128), D's 64 -> 128 layer: 5.4 against 9.3 ms; (6272, 512, 64), (3136, 256, 128),
  (1568, 2048, 256), (12544, 64, 16)), so the product is formed that way round and transposed behind an
  optimization barrier, which keeps XLA from folding the transpose back into the dot. (Dense layers, with
  n = 100 rows, measured the other way, 0.68 against 0.78 ms at (100, 784, 600): they keep autodiff's.)"""
  inputs = inputs.reshape(-1, inputs.shape[-1])
  out_gradient = out_gradient.reshape(-1, out_gradient.shape[-1]).astype(inputs.dtype)  # The forward's operand dtype.
  contract_rows = (((0,), (0,)), ((), ()))
  if inputs.shape[1] <= out_gradient.shape[1]:
    return lax.dot_general(inputs, out_gradient, contract_rows, precision=precision,
                           preferred_element_type=jnp.float32)
  product = lax.dot_general(out_gradient, inputs, contract_rows, precision=precision,
                            preferred_element_type=jnp.float32)
  return lax.optimization_barrier(product).T


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _patches_conv(lhs, rhs, strides, padding, precision, preferred_element_type):
  """out[o] = Σ_t pad(x)[s·o + t] K[t]: the input's patches times the kernel as a (kh·kw·C_in, C_out) matrix.
  Its custom VJP differs from what autodiff would write only in the kernel gradient's orientation
  (`_weight_gradient`)."""
  return _patches_conv_forward(lhs, rhs, strides, padding, precision, preferred_element_type)[0]


def _patches_conv_forward(lhs, rhs, strides, padding, precision, preferred_element_type):
  patches = _padded_patches(lhs, rhs.shape[:2], strides, padding)
  out = jnp.matmul(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision,
                   preferred_element_type=preferred_element_type)
  return out, (lhs, rhs, patches)


def _patches_conv_backward(strides, padding, precision, preferred_element_type, residuals, out_gradient):
  lhs, rhs, patches = residuals
  kernel_matrix = rhs.reshape(-1, rhs.shape[-1])
  patch_gradient = jnp.matmul(out_gradient, kernel_matrix.T.astype(out_gradient.dtype), precision=precision)
  # The patches are a linear function of the input (slices of its padding): their transpose scatters back.
  extract = functools.partial(_padded_patches, kernel_size=rhs.shape[:2], strides=strides, padding=padding)
  (lhs_gradient,) = jax.linear_transpose(extract, jax.ShapeDtypeStruct(lhs.shape, lhs.dtype))(
      patch_gradient.astype(lhs.dtype))
  rhs_gradient = _weight_gradient(patches, out_gradient, precision).reshape(rhs.shape).astype(rhs.dtype)
  return lhs_gradient, rhs_gradient


_patches_conv.defvjp(_patches_conv_forward, _patches_conv_backward)


def _native_input_dilated_conv(lhs, rhs, dilation, padding, precision, preferred_element_type):
  return lax.conv_general_dilated(lhs, rhs, (1, 1), padding, dilation, None, NHWC_DIMENSIONS,
                                  precision=precision, preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _input_dilated_conv(lhs, rhs, dilation, padding, precision, preferred_element_type):
  """The stride-1 convolution of the input dilated by `dilation` (a transposed convolution). XLA:CPU runs its
  forward well, but neither of its gradients: both are taken here from the output gradient's patches."""
  return _native_input_dilated_conv(lhs, rhs, dilation, padding, precision, preferred_element_type)


def _input_dilated_conv_forward(lhs, rhs, dilation, padding, precision, preferred_element_type):
  return _input_dilated_conv(lhs, rhs, dilation, padding, precision, preferred_element_type), (lhs, rhs)


def _input_dilated_conv_backward(dilation, padding, precision, preferred_element_type, residuals, out_gradient):
  lhs, rhs = residuals
  # y[o] = Σ_t x_dilated_padded[o + t] K[t], and x[i] sits at s·i + low there, so
  # dx[i] = Σ_t g[s·i + low − t] K[t]ᵀ and dK[t] = Σ_i x[i] ⊗ g[s·i + low − t]. With u = k − 1 − t (the flipped
  # tap) and g padded by k − 1 − low in front, g[s·i + low − t] is the padded g at s·i + u: both gradients
  # contract the stride-s patches of the padded output gradient, dx against the flipped kernel.
  kernel_height, kernel_width, in_features, out_features = rhs.shape
  grid = lhs.shape[1:3]
  cuts = [(kernel - 1 - pads[0], (side - 1) * step + kernel - (out + kernel - 1 - pads[0]), 0)
          for kernel, pads, side, step, out in zip(rhs.shape[:2], padding, grid, dilation, out_gradient.shape[1:3])]
  padded = lax.pad(out_gradient, jnp.zeros((), out_gradient.dtype), [(0, 0, 0), *cuts, (0, 0, 0)])
  patches = _extract_patches(padded, rhs.shape[:2], dilation, grid)
  flipped_kernel = jnp.swapaxes(rhs[::-1, ::-1], 2, 3).reshape(-1, in_features)  # (u, C_out) rows, C_in columns.
  lhs_gradient = jnp.matmul(patches, flipped_kernel.astype(patches.dtype), precision=precision,
                            preferred_element_type=preferred_element_type)
  flipped = _weight_gradient(lhs.astype(patches.dtype), patches, precision)
  flipped = flipped.reshape(in_features, kernel_height, kernel_width, out_features)
  rhs_gradient = jnp.moveaxis(flipped, 0, 2)[::-1, ::-1].astype(rhs.dtype)
  return lhs_gradient.astype(lhs.dtype), rhs_gradient


_input_dilated_conv.defvjp(_input_dilated_conv_forward, _input_dilated_conv_backward)


def matmul_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                                dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                                precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` as matmuls, for 2-D NHWC/HWIO convolutions with either strides or an
  input dilation (a transposed convolution); anything else (kernel dilation, groups, other layouts, strides
  together with input dilation, string paddings with input dilation, which lax refuses) goes to
  `lax.conv_general_dilated` itself."""
  strides = tuple(window_strides)
  lhs_dilation = tuple(lhs_dilation or (1,) * len(strides))
  rhs_dilation = tuple(rhs_dilation or (1,) * len(strides))
  supported = (lhs.ndim == 4 and _is_nhwc(lhs, rhs, dimension_numbers) and feature_group_count == 1
               and batch_group_count == 1 and rhs_dilation == (1, 1)
               and (lhs_dilation == (1, 1) or (strides == (1, 1) and not isinstance(padding, str))))
  if not supported:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  if lhs_dilation == (1, 1):
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides)
    return _patches_conv(lhs, rhs, strides, pads, precision, preferred_element_type)
  return _input_dilated_conv(lhs, rhs, lhs_dilation, tuple(tuple(pair) for pair in padding), precision,
                             preferred_element_type)


# backend -> conv_general_dilated; a backend not listed keeps lax.conv_general_dilated (XLA's own kernels).
CONVOLUTIONS_BY_BACKEND = {"cpu": matmul_conv_general_dilated}


@contextlib.contextmanager
def using_convolutions(table):
  """Within the block, `table` (backend -> conv_general_dilated) replaces CONVOLUTIONS_BY_BACKEND: `{}` gives
  XLA's own convolutions everywhere. For the tests and the benchmark's before/after; it changes what later
  traces compile, not programs already compiled."""
  saved = dict(CONVOLUTIONS_BY_BACKEND)
  CONVOLUTIONS_BY_BACKEND.clear()
  CONVOLUTIONS_BY_BACKEND.update(table)
  try:
    yield
  finally:
    CONVOLUTIONS_BY_BACKEND.clear()
    CONVOLUTIONS_BY_BACKEND.update(saved)


def conv_general_dilated(*args, **kwargs):
  """`lax.conv_general_dilated` in the formulation that is fast on the default backend."""
  return CONVOLUTIONS_BY_BACKEND.get(jax.default_backend(), lax.conv_general_dilated)(*args, **kwargs)


def label_planes_conv(labels, num_classes):
  """A `conv_general_dilated` for inputs (NHWC) whose last `num_classes` channels are the one-hot planes of
  `labels` (a conditional discriminator's "concat" input), computed as the image channels' convolution plus one
  map per label: the planes are constant over the image, so their convolution depends only on the label and
  the position (the padding cuts the kernel at the borders). The K maps are one convolution of a single
  all-ones image, instead of K extra input channels in every example's convolution (50 one-hot planes made
  the DCGAN discriminator's first layer 51 times its image-only cost). Same parameters and outputs."""

  def convolve(lhs, rhs, window_strides, padding, **kwargs):
    kernel_height, kernel_width, _, features = rhs.shape  # HWIO, Flax's layout.
    out = conv_general_dilated(lhs[..., :-num_classes], rhs[:, :, :-num_classes], window_strides, padding, **kwargs)
    label_kernel = rhs[:, :, -num_classes:].reshape(kernel_height, kernel_width, 1, num_classes * features)
    ones = jnp.ones((1, *lhs.shape[1:3], 1), lhs.dtype)
    maps = conv_general_dilated(ones, label_kernel, window_strides, padding, **kwargs)[0]
    maps = jnp.moveaxis(maps.reshape(*maps.shape[:2], num_classes, features), 2, 0)  # (K, H', W', features)
    return out + maps[labels]

  return convolve


def Conv(*args, convolution=None, **kwargs):  # pylint: disable=invalid-name
  """`flax.linen.Conv` whose convolution is this module's `conv_general_dilated` (or `convolution`, one built
  on it, such as `label_planes_conv`)."""
  return nn.Conv(*args, conv_general_dilated=convolution or conv_general_dilated, **kwargs)


def _transpose_padding(kernel_size, stride, padding):
  """The (low, high) padding of the input-dilated convolution that `lax.conv_transpose` (as Flax calls it) runs:
  'SAME' and 'VALID' name the forward convolution's padding and are converted by lax's rule
  (_conv_transpose_padding); an explicit (low, high) pair is that padding itself."""
  if not isinstance(padding, str):
    return tuple(padding)
  if padding == "SAME":
    total = kernel_size + stride - 2
    low = kernel_size - 1 if stride > kernel_size - 1 else -(-total // 2)
  elif padding == "VALID":
    total = kernel_size + stride - 2 + max(kernel_size - stride, 0)
    low = kernel_size - 1
  else:
    raise ValueError(f"ConvTranspose padding {padding!r} is not supported here; allowed: 'SAME', 'VALID', or "
                     "(low, high) pairs")
  return low, total - low


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` (2-D, NHWC, kernel not flipped) whose convolution is `conv_general_dilated`:
  the same parameters ('kernel' (kh, kw, C_in, C_out), 'bias'), initialisers and outputs."""
  features: int
  kernel_size: tuple
  strides: tuple = (1, 1)
  padding: object = "SAME"
  use_bias: bool = True
  dtype: Optional[jnp.dtype] = None
  kernel_init: object = nn.initializers.lecun_normal()
  bias_init: object = nn.initializers.zeros

  @nn.compact
  def __call__(self, inputs):
    kernel_size, strides = tuple(self.kernel_size), tuple(self.strides)
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, inputs.shape[-1], self.features))
    padding = nn.linear.canonicalize_padding(self.padding, len(kernel_size))  # Flax's forms: 'SAME', 1, (1, 2) ...
    paddings = [_transpose_padding(size, stride, padding if isinstance(padding, str) else padding[axis])
                for axis, (size, stride) in enumerate(zip(kernel_size, strides))]
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_general_dilated(inputs, kernel, (1, 1), paddings, lhs_dilation=strides,
                             dimension_numbers=NHWC_DIMENSIONS)
    return y if bias is None else y + bias
