"""Conditional VAE (Sohn et al. 2015): q(z|x,y), p(x|z,y), with the classifier's conditional accuracy.

  python -m experiments.cvae --flagfile=experiments/configs/cvae_fashion_mnist.cfg --workdir=runs/cvae
"""

from experiments import common
from gen_jax.train import cvae

common.define_config_flags(cvae.CVAEConfig, {
    "architecture": "mlp or conv (convolutional encoder/decoder); the one-hot label enters both.",
    "latent_dim": "Dimension of the style code z.",
    "conditional": "Must stay true here (experiments.vae trains the unconditional VAE).",
    "num_images": "Images in each reconstruction/sample grid (samples cycle through the classes).",
    "conditional_samples_per_class": "Samples per class the classifier labels for conditional_accuracy.",
    "classifier": "Folder of a trained classifier (experiments.classifier); empty: the dataset's own, "
                  "trained and cached in the data dir on first use.",
})


def main(argv):
  del argv
  config = common.config_from_flags(cvae.CVAEConfig)
  cvae.validate(config)
  workdir = common.prepare_workdir(cvae.CVAEConfig)
  cvae.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  common.run(main)
