"""gen_jax: deep generative models (VAE, CVAE, autoencoder, GAN) in JAX and Flax Linen."""

__version__ = "0.1.0"
