"""The autoencoder baseline: the VAE's networks and data, a deterministic code, −log p(x|z) as the loss.

  python -m experiments.autoencoder --flagfile=experiments/configs/autoencoder_fashion_mnist.cfg \
      --workdir=runs/autoencoder
"""

from experiments import common
from gen_jax.train import autoencoder

common.define_config_flags(autoencoder.AutoencoderConfig, {
    "architecture": "mlp or conv (convolutional encoder/decoder).",
    "hidden_sizes": "Encoder hidden layer sizes; the decoder mirrors them.",
    "latent_dim": "Dimension of the code z.",
    "activation": "relu, tanh, leaky_relu or elu.",
    "likelihood": "bernoulli, gaussian or continuous_bernoulli decoder (the loss is -log p(x|z)).",
    "gaussian_std": "Fixed decoder std for --likelihood=gaussian (0: learned per pixel).",
    "init_std": "Weights drawn from N(0, init_std^2) (0: Flax's default init).",
    "num_images": "Images in each reconstruction/sample grid.",
})


def main(argv):
  del argv
  config = common.config_from_flags(autoencoder.AutoencoderConfig)
  autoencoder.validate(config)
  workdir = common.prepare_workdir(autoencoder.AutoencoderConfig)
  autoencoder.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  common.run(main)
