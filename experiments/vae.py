"""Variational autoencoder (Kingma & Welling 2014) on images.

  python -m experiments.vae --flagfile=experiments/configs/vae_fashion_mnist.cfg --workdir=runs/vae
"""

from experiments import main

if __name__ == "__main__":
  main.run_family("vae")
