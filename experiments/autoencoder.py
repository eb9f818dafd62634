"""The autoencoder baseline: the VAE's networks and data, a deterministic code, −log p(x|z) as the loss.

  python -m experiments.autoencoder --flagfile=experiments/configs/autoencoder_fashion_mnist.cfg \
      --workdir=runs/autoencoder
"""

from experiments import common
from gen_jax.train import autoencoder

common.define_config_flags(autoencoder.AutoencoderConfig, {
    "architecture": "mlp or conv (convolutional encoder/decoder).",
    "likelihood": "bernoulli, gaussian or continuous_bernoulli decoder (the loss is -log p(x|z)).",
})


def main(argv):
  del argv
  config = common.config_from_flags(autoencoder.AutoencoderConfig)
  autoencoder.validate(config)
  workdir = common.prepare_workdir(autoencoder.AutoencoderConfig)
  autoencoder.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  common.run(main)
