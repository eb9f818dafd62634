"""Test log-likelihood of a trained VAE / IWAE / CVAE run, from its latest checkpoint.

  .venv/bin/python scripts/evaluate.py --workdir=runs/iwae_k50 [--iwae_k=5000]

Rebuilds the model from the run's config.json, restores the newest checkpoint (orbax) and appends one test
row to the run's metrics.jsonl: log_likelihood (the k-sample importance-weighted bound over the whole test
split, nats per example), iwae_k, bits_per_dim (binarised data) and active_units (per layer for two).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from experiments import common  # noqa: E402
from gen_jax.errors import UserError  # noqa: E402
from gen_jax.evaluation import likelihood  # noqa: E402
from gen_jax.train import vae  # noqa: E402

flags.DEFINE_integer("iwae_k", likelihood.DEFAULT_IWAE_K, "Importance samples per test image (papers: 5000).")


def main(argv):
  del argv
  workdir = flags.FLAGS.workdir
  if not workdir or not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is not a directory; allowed: the workdir of a finished or "
                           "running VAE run")
  row = vae.evaluate_checkpoint(workdir, flags.FLAGS.iwae_k)
  print(" ".join(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"
                 for key, value in row.items()))


if __name__ == "__main__":
  common.run(main)
