"""Variational autoencoder (Kingma & Welling 2014) on images.

  python -m experiments.vae --flagfile=experiments/configs/vae_fashion_mnist.cfg --workdir=runs/vae
"""

from experiments import common
from gen_jax.train import vae

common.define_config_flags(vae.VAEConfig, {
    "architecture": "mlp, conv (convolutional encoder/decoder) or two_layer (two stochastic layers, IWAE).",
    "conditional": "Condition encoder and decoder on the class label (CVAE).",
    "objective": "elbo (k-sample average ELBO; k=1 is the VAE) or iwae (importance-weighted bound L_k).",
    "num_importance_samples": "k: samples of z per example in the training objective.",
    "top_hidden_sizes": "two_layer: hidden sizes between h1 (--latent_dim) and h2 (--top_latent_dim).",
    "top_latent_dim": "two_layer: dimension of the top stochastic layer h2 (the prior's).",
    "final_iwae_k": "k of the test log-likelihood (L_k over the test split) in the last test row (0: none).",
})


def main(argv):
  del argv
  config = common.config_from_flags(vae.VAEConfig)
  vae.validate(config)
  workdir = common.prepare_workdir(vae.VAEConfig)
  vae.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  common.run(main)
