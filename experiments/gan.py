"""Generative adversarial networks (Goodfellow et al. 2014) on toy mixtures and images.

  python -m experiments.gan --flagfile=experiments/configs/gan_ring.cfg --workdir=runs/gan_ring
"""

from experiments import common
from gen_jax.train import gan

common.define_config_flags(gan.GANConfig, {
    "dataset": "mixture_1d, ring, grid (toy mixtures), or an image dataset: fashion_mnist (offline), mnist, "
               "npz:PATH, images:DIR or a TFDS catalog name.",
    "num_epochs": "Training epochs (toy data: an epoch is 1000 steps).",
    "num_steps": "Training steps, each d_steps_per_g_step D updates and one G update; > 0 overrides num_epochs.",
    "batch_size": "Real examples per discriminator step (as many fakes); the generator step uses as many.",
    "learning_rate": "Generator's peak learning rate (and the discriminator's unless --d_learning_rate).",
    "adam_b1": "Generator's Adam beta1 (and the discriminator's unless --d_adam_b1).",
    "adam_b2": "Generator's Adam beta2 (and the discriminator's unless --d_adam_b2).",
    "architecture": "mlp (vectors or images) or dcgan (convolutional, for images).",
    "latent_dim": "Dimension of z ~ N(0, I).",
    "g_hidden_sizes": "Generator hidden layer sizes (mlp).",
    "d_hidden_sizes": "Discriminator hidden layer sizes (mlp).",
    "g_activation": "Generator activation (mlp): relu, tanh, leaky_relu or elu.",
    "d_activation": "Discriminator activation (mlp): relu, tanh, leaky_relu or elu.",
    "base_features": "Feature maps of the widest-resolution conv layer (dcgan); doubled per halving.",
    "g_normalization": "Generator normalisation: none or batch (batch statistics, also when sampling).",
    "d_normalization": "Discriminator normalisation: none or batch.",
    "spectral_norm": "Spectral normalisation of every discriminator layer.",
    "packing": "PacGAN packing: the discriminator judges this many examples at once.",
    "loss": "minimax (saturating), non_saturating, hinge, least_squares or wasserstein.",
    "gradient_penalty_weight": "WGAN-GP penalty weight lambda (0: none; 10 with --loss=wasserstein).",
    "r1_weight": "R1 penalty weight gamma on real data, added as gamma/2 E|grad D|^2 (0: none).",
    "d_steps_per_g_step": "Discriminator steps per generator step (n_critic).",
    "d_learning_rate": "Discriminator's peak learning rate (0: --learning_rate).",
    "d_adam_b1": "Discriminator's Adam beta1 (negative: --adam_b1).",
    "d_adam_b2": "Discriminator's Adam beta2 (negative: --adam_b2).",
    "ema_decay": "Decay of the EMA of the generator's weights used for evaluation and samples (0: raw weights).",
    "conditional": "Class-conditional GAN: the label goes to both networks.",
    "num_eval_samples": "Samples scored per evaluation (toys: mode coverage, 2500 in the protocol; images: "
                        "FCD/precision/recall, 0: only at the end).",
    "score_sample_quality": "Images: score FCD, precision and recall with the dataset's classifier (trained "
                            "and cached on first use; skipped for unlabelled data).",
    "num_images": "Images in each sample grid.",
})


def main(argv):
  del argv
  workdir = common.prepare_workdir(gan.GANConfig)
  config = common.config_from_flags(gan.GANConfig)
  gan.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  common.run(main)
