"""The CPU's matmul convolutions against XLA's own: forward and both gradients, every layer shape the
models use and the corner cases of the index arithmetic (VALID, explicit and uneven padding, a kernel smaller
than its stride, 1×1); the choice by backend; and the benchmark's refusal of a part it does not know.

All cases run as one jitted program per implementation on tiny arrays: one program per case (40 in all) made
the file take 16 s cold against 8.5, and running eagerly, every primitive compiled on its own, took longer still.
"""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conftest import assert_one_line_error
from gen_jax.models import convolution

# (input shape, output features, kernel, strides, padding): the DCGAN's, the conv VAE's and the ConvHVAE's
# layers at small batch and width, then the awkward cases.
CASES = [
    ((2, 28, 28, 1), 8, (4, 4), (2, 2), "SAME"),
    ((2, 7, 7, 6), 4, (4, 4), (2, 2), "SAME"),
    ((2, 28, 28, 1), 4, (7, 7), (1, 1), [(3, 3), (3, 3)]),
    ((2, 14, 14, 3), 5, (3, 3), (2, 2), [(1, 1), (1, 1)]),
    ((2, 9, 8, 3), 5, (3, 2), (2, 3), "VALID"),
    ((2, 6, 7, 2), 3, (3, 3), (3, 2), [(2, 0), (1, 3)]),
    ((2, 5, 5, 3), 2, (1, 1), (2, 2), "SAME"),
    ((2, 9, 9, 3), 4, (2, 2), (2, 2), "VALID"),
    ((2, 8, 8, 3), 4, (3, 3), (2, 2), 1),
    ((2, 7, 7, 3), 2, (1, 1), (1, 1), "SAME"),
    # Kernel sides that are multiples of their strides (the block patches), with input past the last window.
    ((2, 11, 10, 2), 3, (6, 4), (3, 2), [(1, 2), (0, 1)]),
]


# Each case once as a convolution and once as a transposed convolution.
MODULE_CASES = [(case, transposed) for case in CASES for transposed in (False, True)]


def _case_name(case, transposed):
  return f"{'conv_transpose' if transposed else 'conv'}{case}"


def _module(case, transposed, conv_class, transpose_class):
  _, features, kernel, strides, padding = case
  return (transpose_class if transposed else conv_class)(features, kernel, strides, padding)


def _outputs_and_gradients(module, params, x):
  def loss(params, x):  # A fixed random projection of the output, so every output position has its own weight.
    out = module.apply(params, x)
    return jnp.sum(out * jax.random.normal(jax.random.key(7), out.shape)), out
  (_, out), gradients = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
  return out, gradients


def test_matmul_convolutions_equal_xla_forward_and_gradients():
  """Every case in one jitted program per implementation: forty small programs compiled one by one took
  most of this file's time."""
  natives = [_module(case, transposed, nn.Conv, nn.ConvTranspose) for case, transposed in MODULE_CASES]
  matmuls = [_module(case, transposed, convolution.Conv, convolution.ConvTranspose)
             for case, transposed in MODULE_CASES]
  inputs = [jax.random.normal(jax.random.key(0), case[0]) for case, _ in MODULE_CASES]
  params = jax.jit(lambda xs: [native.init(jax.random.key(1), x) for native, x in zip(natives, xs)])(inputs)
  for native, matmul, x, name in zip(natives, matmuls, inputs, [_case_name(*case) for case in MODULE_CASES]):
    assert (jax.tree.map(jnp.shape, jax.eval_shape(matmul.init, jax.random.key(1), x))
            == jax.tree.map(jnp.shape, jax.eval_shape(native.init, jax.random.key(1), x))), name

  def outputs_and_gradients(modules):
    return jax.jit(lambda params, xs: [_outputs_and_gradients(module, p, x)
                                       for module, p, x in zip(modules, params, xs)])(params, inputs)

  expected = outputs_and_gradients(natives)
  with convolution.using_convolutions({jax.default_backend(): convolution.matmul_conv_general_dilated}):
    got = outputs_and_gradients(matmuls)
  for (case, transposed), want_case, have_case in zip(MODULE_CASES, expected, got):
    for want, have in zip(jax.tree.leaves(want_case), jax.tree.leaves(have_case)):
      assert want.shape == have.shape, _case_name(case, transposed)
      np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))),
                                 err_msg=_case_name(case, transposed))


def test_the_matmul_form_runs_on_the_cpu_and_only_there():
  x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((4, 4, 2, 3))
  def program(backend_table):  # The jaxpr's text, nested calls included.
    with convolution.using_convolutions(backend_table):
      return str(jax.make_jaxpr(lambda x: convolution.conv_general_dilated(
          x, kernel, (2, 2), "SAME", dimension_numbers=convolution.NHWC_DIMENSIONS))(x))
  here = program(dict(convolution.CONVOLUTIONS_BY_BACKEND))
  matmuls_here = jax.default_backend() == "cpu"  # GPUs and TPUs keep XLA's own convolutions.
  assert ("conv_general_dilated" not in here and "dot_general" in here) == matmuls_here
  assert "conv_general_dilated" in program({})  # A backend the table does not list.
  assert "conv_general_dilated" not in program({jax.default_backend(): convolution.matmul_conv_general_dilated})


def test_label_planes_convolve_like_the_concatenated_input():
  """A conditional D's first layer: image ⊕ one-hot planes of the labels, convolved as the image's convolution
  plus one map per label, equals XLA's convolution of the concatenation, forward and both gradients (the
  input's on its image channels), at the DCGAN's stride and an odd one whose padding cuts the kernel unevenly."""
  num_classes, channels = 5, 2
  x = jax.random.normal(jax.random.key(0), (6, 11, 11, channels))
  labels = jnp.array([0, 4, 2, 2, 1, 3])
  planes = jnp.broadcast_to(jax.nn.one_hot(labels, num_classes)[:, None, None], (6, 11, 11, num_classes))
  inputs = jnp.concatenate([x, planes], -1)
  for kernel_size, strides, padding in [((4, 4), (2, 2), "SAME"), ((3, 5), (3, 1), ((2, 0), (1, 3)))]:
    kernel = jax.random.normal(jax.random.key(1), (*kernel_size, channels + num_classes, 8))
    settings = dict(window_strides=strides, padding=padding, dimension_numbers=convolution.NHWC_DIMENSIONS)
    results = []
    for convolve in (lax.conv_general_dilated, convolution.label_planes_conv(labels, num_classes)):
      out, pullback = jax.vjp(lambda lhs, rhs, convolve=convolve: convolve(lhs, rhs, **settings), inputs, kernel)
      input_gradient, kernel_gradient = pullback(jax.random.normal(jax.random.key(2), out.shape))
      results.append((out, input_gradient[..., :channels], kernel_gradient))
    for expected, got in zip(*results):
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_unsupported_forms_fall_back_to_xla():
  x, kernel = jax.random.normal(jax.random.key(0), (1, 9, 9, 4)), jax.random.normal(jax.random.key(1), (3, 3, 2, 6))
  grouped = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=convolution.NHWC_DIMENSIONS,
                 feature_group_count=2)
  np.testing.assert_array_equal(convolution.matmul_conv_general_dilated(x, kernel, **grouped),
                                lax.conv_general_dilated(x, kernel, **grouped))


def test_what_lax_refuses_is_refused_alike():
  x, kernel = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 2))
  dilated_with_string_padding = dict(window_strides=(1, 1), padding="SAME", lhs_dilation=(2, 2),
                                     dimension_numbers=convolution.NHWC_DIMENSIONS)
  with pytest.raises(Exception) as refused:
    lax.conv_general_dilated(x, kernel, **dilated_with_string_padding)
  with pytest.raises(type(refused.value)):
    convolution.matmul_conv_general_dilated(x, kernel, **dilated_with_string_padding)
  with pytest.raises(ValueError, match="'CIRCULAR' is not supported here"):
    convolution.ConvTranspose(2, (3, 3), (2, 2), "CIRCULAR").init(jax.random.key(0), x)


def test_the_benchmark_refuses_an_unknown_part_in_one_line(repo):
  """scripts/benchmark.py times the convolution variants (--parts=dcgan); a part it does not know ends it
  before anything is measured."""
  result = subprocess.run([sys.executable, "scripts/benchmark.py", "--parts=dcgan,convnext"], cwd=repo,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert_one_line_error(result, "--parts=dcgan,convnext", "convnext", "allowed:",
                        "vae, density, dcgan, convhvae, iwae")
  assert not result.stdout  # Refused before the roofline.
  for flag in ("--dispatches=0", "--matmul_size=-1"):
    result = subprocess.run([sys.executable, "scripts/benchmark.py", flag], cwd=repo, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and not result.stdout
    assert_one_line_error(result, flag, "allowed: a positive integer")
