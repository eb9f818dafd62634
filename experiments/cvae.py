"""Conditional VAE (Sohn et al. 2015): q(z|x,y), p(x|z,y), with the classifier's conditional accuracy.

  python -m experiments.cvae --flagfile=experiments/configs/cvae_fashion_mnist.cfg --workdir=runs/cvae
"""

from experiments import common
from gen_jax.train import cvae

common.define_config_flags(cvae.CVAEConfig, {
    "architecture": "mlp or conv (convolutional encoder/decoder); the one-hot label enters both.",
    "hidden_sizes": "Encoder hidden layer sizes; the decoder mirrors them.",
    "latent_dim": "Dimension of the style code z.",
    "activation": "relu, tanh, leaky_relu or elu.",
    "likelihood": "bernoulli, gaussian or continuous_bernoulli decoder.",
    "gaussian_std": "Fixed decoder std for --likelihood=gaussian (0: learned per pixel).",
    "init_std": "Weights drawn from N(0, init_std^2) (0: Flax's default init).",
    "beta": "Weight of the KL term in the training loss (the reported ELBO is always the true bound).",
    "kl_warmup_steps": "Steps of linear KL warm-up from 0 to beta (0: none).",
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
