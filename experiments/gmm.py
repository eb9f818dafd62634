"""Diagonal Gaussian / Bernoulli mixture fitted by EM: the likelihood baseline for the VAE.

  python -m experiments.gmm --flagfile=experiments/configs/gmm_fashion_mnist.cfg --workdir=runs/gmm100
"""

from experiments import common
from gen_jax.train import gmm

common.define_config_flags(gmm.GMMConfig, {
    "num_components": "Mixture components K.",
    "likelihood": "bernoulli (binarised data) or gaussian (continuous data), diagonal per component.",
    "pseudo_count": "Strength, in examples, of the conjugate priors that keep EM finite (MAP-EM).",
    "num_epochs": "EM iterations (each one pass over the training split).",
    "log_every_steps": "EM iterations between train rows.",
    "eval_every_steps": "EM iterations between test evaluations.",
})


def main(argv):
  del argv
  config = common.config_from_flags(gmm.GMMConfig)
  gmm.validate(config)
  workdir = common.prepare_workdir(gmm.GMMConfig)
  gmm.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  common.run(main)
