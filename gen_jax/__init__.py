"""gen_jax: deep generative models (VAE, CVAE, autoencoder, GAN) in JAX and Flax Linen.

`gen_jax.load_run(workdir, step=None)` opens a trained run (see the README's "From Python").
"""

__version__ = "0.1.0"


def load_run(workdir, step=None):
  """The trained run in `workdir` (`gen_jax.families.load_run`); imported on use, so `import gen_jax` is free."""
  from gen_jax.families import load_run as load
  return load(workdir, step)
