"""The autoencoder baseline: the VAE's networks and data, a deterministic code, −log p(x|z) as the loss.

  python -m experiments.autoencoder --flagfile=experiments/configs/autoencoder_fashion_mnist.cfg \\
      --workdir=runs/autoencoder
"""

from experiments import main

if __name__ == "__main__":
  main.run_family("autoencoder")
