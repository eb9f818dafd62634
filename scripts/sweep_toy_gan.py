"""Several seeds of a toy GAN at once (vmapped), for recipe searches: mode coverage per seed and the mean.

  python scripts/sweep_toy_gan.py --flagfile=experiments/configs/gan_grid.cfg --seeds=0,1,2 --learning_rate=1e-3

Takes every flag of `experiments.gan` (a flagfile, then changes) and --seeds (it writes no workdir). Seed s
follows the random streams of `python -m experiments.gan --seed=s`, to rounding (gen_jax/families/gan_seeds.py).
Prints one line per evaluation (every --eval_every_steps): modes and high quality per seed, then the means.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import main as experiment_main  # noqa: E402
from gen_jax import config as config_lib  # noqa: E402
from gen_jax.errors import UserError  # noqa: E402
from gen_jax.families import gan, gan_seeds  # noqa: E402

experiment_main.define_config_flags(gan.Config, gan.HELP)  # The flags of experiments.gan, from one source.
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds trained together, vmapped.")


def main(argv):
  del argv
  config = experiment_main.config_from_flags(gan.Config)
  try:
    seeds = [int(seed) for seed in flags.FLAGS.seeds]
  except ValueError:
    seeds = None
  if not seeds or not all(0 <= seed <= config_lib.MAX_SEED for seed in seeds):
    raise UserError(f"--seeds={','.join(flags.FLAGS.seeds)} is not allowed; allowed: a comma-separated list "
                    f"of integers from 0 to {config_lib.MAX_SEED}, as --seed")
  start = time.time()

  def report(step, scores):
    modes = [score["modes"] for score in scores]
    quality = [100 * score["high_quality"] for score in scores]
    reverse_kl = np.nanmean([score["reverse_kl"] for score in scores])
    print(f"step {step:7d}  {time.time() - start:6.0f}s  modes {modes} mean {np.mean(modes):.1f}  "
          f"high quality {np.round(quality, 1).tolist()} mean {np.mean(quality):.1f}%  "
          f"reverse KL mean {reverse_kl:.3f}", flush=True)

  gan_seeds.train_toy_seeds(config, seeds, report)


if __name__ == "__main__":
  experiment_main.run(main)
