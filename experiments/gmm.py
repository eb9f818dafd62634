"""Diagonal Gaussian / Bernoulli mixture fitted by EM: the likelihood baseline for the VAE.

  python -m experiments.gmm --flagfile=experiments/configs/gmm_fashion_mnist.cfg --workdir=runs/gmm100
"""

from experiments import main

if __name__ == "__main__":
  main.run_family("gmm")
