"""Conditional VAE (Sohn et al. 2015): q(z|x,y), p(x|z,y), with the classifier's conditional accuracy.

  python -m experiments.cvae --flagfile=experiments/configs/cvae_fashion_mnist.cfg --workdir=runs/cvae
"""

from experiments import main

if __name__ == "__main__":
  main.run_family("cvae")
