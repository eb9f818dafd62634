"""--compute_dtype=bfloat16: networks compute in bf16, parameters and the ELBO stay float32."""

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.families import latent_code, vae as vae_family


def test_bfloat16_compute_keeps_float32_parameters_and_elbo_close_to_float32():
  image_shape = (28, 28, 1)
  x = (jax.random.uniform(jax.random.key(0), (64, *image_shape)) > 0.5).astype(jnp.float32)
  elbos = {}
  for dtype in ("float32", "bfloat16"):
    config = vae_family.VAEConfig(hidden_sizes=(256,), latent_dim=8, compute_dtype=dtype)
    model = latent_code.build_model(config, image_shape)
    # Jitted: one compilation each instead of one per operation run eagerly.
    params = jax.jit(model.init)(jax.random.key(1), x[:1], jax.random.key(2))["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    # bf16 activations inside, float32 out: the per-example sum over 784 pixels is accumulated in float32.
    output, _, _ = jax.jit(model.apply)({"params": params}, x, jax.random.key(3))
    assert output.dtype == jnp.float32
    recon, kl = jax.jit(lambda params, x, key: vae_family.per_example_elbo(model, params, x, key, None, config))(
        params, x, jax.random.key(3))
    assert recon.dtype == jnp.float32 and kl.dtype == jnp.float32
    elbos[dtype] = np.asarray(recon - kl)
  # Same parameters (same init key), so the two differ only by bf16 rounding: at most bf16's unit roundoff
  # (2^-8) relative, since the per-pixel rounding errors partly cancel in the sum (measured: 7e-4).
  np.testing.assert_allclose(elbos["bfloat16"], elbos["float32"], rtol=2 ** -8)
  assert not np.array_equal(elbos["bfloat16"], elbos["float32"])  # bf16 really was used.
