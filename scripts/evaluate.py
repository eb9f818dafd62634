"""Test log-likelihood of a trained run (VAE, IWAE, CVAE or mixture), from a checkpoint.

  .venv/bin/python scripts/evaluate.py --workdir=runs/iwae_k50 [--iwae_k=5000] [--step=S]

Opens the run with `gen_jax.load_run` (its config.json and its best-validation checkpoint for a run that
selects on a validation split, else the newest; or --step) and appends one test row to its metrics.jsonl:
log_likelihood (the k-sample importance-weighted bound over the whole test split, nats per example), iwae_k,
bits_per_dim (binarised data) and active_units (per layer for two). A family without a likelihood (a GAN, an
autoencoder) is refused in one line naming the families that have one.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

import gen_jax  # noqa: E402
from experiments import main as experiment_main  # noqa: E402
from gen_jax import families  # noqa: E402
from gen_jax.errors import UserError  # noqa: E402
from gen_jax.evaluation import likelihood  # noqa: E402

# The runs this script evaluates, in the words of its --workdir help and refusals: those of a family with a likelihood.
_WITH_LIKELIHOOD = families.families_with("test_log_likelihood")
LIKELIHOOD_FAMILIES = f"a {', '.join(_WITH_LIKELIHOOD[:-1])} or {_WITH_LIKELIHOOD[-1]} run"
experiment_main.define_run_flags(f"The run to evaluate (required): the workdir of {LIKELIHOOD_FAMILIES}, finished "
                                 "or still training; one test row is appended to its metrics.jsonl.")
flags.DEFINE_integer("iwae_k", likelihood.DEFAULT_IWAE_K, "Importance samples per test image (papers: 5000).")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the best-validation one of a run "
                     "that selects on a validation split, else the newest).")


def main(argv):
  del argv
  started = time.time()
  workdir, iwae_k = flags.FLAGS.workdir, flags.FLAGS.iwae_k
  if not workdir:
    raise UserError(f"--workdir is missing; allowed: the workdir of {LIKELIHOOD_FAMILIES}")
  if not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is not a directory; allowed: the workdir of {LIKELIHOOD_FAMILIES}")
  if iwae_k <= 0:
    raise UserError(f"--iwae_k={iwae_k} is not allowed; allowed: a positive number of importance samples")
  run = gen_jax.load_run(workdir, flags.FLAGS.step)
  row, appended = run.append_test_row(run.test_log_likelihood(iwae_k), started)
  if not appended:
    # The row's own identity: an exact likelihood (the mixture's) has no iwae_k, whatever --iwae_k said.
    identity = ", ".join(f"{key} {row[key]}" for key in ("step", "iwae_k") if key in row)
    print(f"not appended: {workdir}/metrics.jsonl already holds this row ({identity})")
  print(" ".join(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"
                 for key, value in row.items()))


if __name__ == "__main__":
  experiment_main.run(main)
