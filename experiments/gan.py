"""Generative adversarial networks (Goodfellow et al. 2014) on toy mixtures and images.

  python -m experiments.gan --flagfile=experiments/configs/gan_ring.cfg --workdir=runs/gan_ring
"""

from experiments import main

if __name__ == "__main__":
  main.run_family("gan")
