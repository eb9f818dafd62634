"""Precision against recall for a trained image GAN's samples: the truncation trick and discriminator ranking.

  python scripts/gan_tradeoffs.py --workdir=runs/dcgan [--truncation=1,0.7,0.5] [--keep=0.5,0.25]

Prints one line per setting with FCD, precision and recall of `--num_samples` samples (10,000: the
issue's protocol) against the training images (`gen_jax.evaluation.sample_quality`):
- truncation ψ < 1: z = ψ·ε with ε from N(0, I) truncated to [−2, 2] (BigGAN's trick, Brock et al. 2019).
  The DCGAN's batch norm normalises with the statistics of the batch at hand, which would undo any
  rescaling of z, so each chunk of 100 truncated codes is generated together with a reference batch of 900
  untruncated ones and the batch statistics are, to 10%, those of N(0, I) codes (a reference batch as in
  Salimans et al. 2016's virtual batch norm); only the truncated codes' images are kept;
- keep f < 1: draw n/f samples and keep the n the run's discriminator scores highest (a hard-threshold
  form of discriminator rejection sampling, Azadi et al. 2019).
A conditional GAN's samples take the labels its own samples take (`run.sample`: classes in turn, or a
self-conditioned GAN's clusters in their shares), the reference codes' too; D ranks each label's draws against
each other and keeps the same share of every label, so the kept samples keep the labels' proportions
(ranking them all together would favour the labels D finds easy).
Nothing is written; the generator is the run's evaluation generator (its EMA when it has one).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gen_jax.config import MAX_SEED, check_range  # noqa: E402
from gen_jax.errors import OneLineArgumentParser, UserError, exit_on_user_error  # noqa: E402

CHUNK, REFERENCE = 100, 900  # Truncated codes per chunk, and the untruncated ones generated beside them.
# Untruncated samples are generated and scored by D in chunks this large: both networks normalise with the
# statistics of the batch at hand, as in training, and chunks this large make those statistics the data's.
RANKING_CHUNK = 1000


def truncated_samples(generate, key, psi, count, latent_dim, num_classes=None, label_shares=None):
  """`count` images at truncation ψ (ψ = 1: z ~ N(0, I)), each chunk of CHUNK codes generated in one batch
  with the same REFERENCE untruncated codes, whose images are dropped: `generate` (codes, labels -> images)
  may normalise with the statistics of its batch, which are then to 10% those of N(0, I) codes."""
  import jax
  import jax.numpy as jnp
  from gen_jax.evaluation.chunked import map_in_chunks
  from gen_jax.families.gan_steps import default_labels
  code_key, reference_key = jax.random.split(key)
  shape = (count, latent_dim)
  z = jax.random.normal(code_key, shape) if psi == 1 else psi * jax.random.truncated_normal(code_key, -2, 2, shape)
  reference = jax.random.normal(reference_key, (REFERENCE, latent_dim))
  reference_labels = default_labels(REFERENCE, num_classes, label_shares)

  def with_reference(codes, labels):
    both_labels = None if labels is None else jnp.concatenate([labels, reference_labels])
    return generate(jnp.concatenate([codes, reference]), both_labels)[:len(codes)]

  return map_in_chunks(with_reference, CHUNK, z, default_labels(count, num_classes, label_shares))


def ranked_samples(generate, discriminate, key, keep, count, latent_dim, num_classes=None, label_shares=None):
  """The `count` images that `discriminate` (images, labels -> scores) ranks highest among count/keep
  (rounded to whole CHUNKs) generated from N(0, I) codes in chunks of RANKING_CHUNK; for a conditional GAN,
  the best of each class, as many of each as the first `count` default labels hold (in that order)."""
  import jax
  import numpy as np
  from gen_jax.evaluation.chunked import map_in_chunks
  from gen_jax.families.gan_steps import default_labels
  drawn = int(round(count / keep / CHUNK)) * CHUNK
  labels = default_labels(drawn, num_classes, label_shares)
  images = map_in_chunks(generate, RANKING_CHUNK, jax.random.normal(key, (drawn, latent_dim)), labels)
  scores = map_in_chunks(discriminate, RANKING_CHUNK, images, labels)
  if num_classes is None:
    return images[np.argsort(-scores)[:count]]
  drawn_labels, kept_labels = np.asarray(labels), np.asarray(default_labels(count, num_classes, label_shares))
  kept = np.empty((count, *images.shape[1:]), images.dtype)
  for label in range(num_classes):
    candidates = np.flatnonzero(drawn_labels == label)
    slots = np.flatnonzero(kept_labels == label)
    kept[slots] = images[candidates[np.argsort(-scores[candidates])[:len(slots)]]]
  return kept


def _fractions(flag, text):
  try:
    values = [float(part) for part in text.split(",") if part.strip()]
  except ValueError:
    values = None
  if not values or not all(0 < v <= 1 for v in values):
    raise UserError(f"--{flag}={text}; allowed: comma-separated numbers in (0, 1]")
  return values


def _parse(argv):
  parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="A trained image GAN's workdir.")
  parser.add_argument("--truncation", default="1", help="Comma-separated ψ in (0, 1]; 1: untruncated.")
  parser.add_argument("--keep", default="", help="Comma-separated fractions in (0, 1] kept by D's ranking.")
  parser.add_argument("--num_samples", type=int, default=10000, help="Samples scored per setting.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the codes.")
  return parser.parse_args(argv)


def main(argv):
  args = _parse(argv)
  truncations = _fractions("truncation", args.truncation)
  keeps = _fractions("keep", args.keep) if args.keep else []
  if args.num_samples <= 0 or args.num_samples % CHUNK:
    raise UserError(f"--num_samples={args.num_samples}; allowed: a positive multiple of {CHUNK}")
  check_range(args, "seed", 0, MAX_SEED + 1)  # As the runs' --seed.
  import jax
  import gen_jax
  from gen_jax.families import gan, gan_evaluation, gan_steps
  run = gen_jax.load_run(args.workdir)
  config = run.config
  if run.family != "gan" or config.architecture != "dcgan":
    raise UserError(f"--workdir={args.workdir} is not an image GAN's run; allowed: a run of --architecture=dcgan")
  _, num_classes, label_shares = gan.image_labels(config, run.dataset)
  networks = gan_steps.build_networks(config, run.dataset.image_shape, num_classes, label_shares)
  g_params, g_state = gan_steps.evaluation_generator(run.state, config), run.state.model_state["generator"]
  d_params, d_state = run.state.params["discriminator"], run.state.model_state["discriminator"]
  generate = jax.jit(lambda z, labels: gan_steps.generate(networks, g_params, g_state, z, labels)[0])
  discriminate = jax.jit(lambda x, labels: gan_steps.discriminate(networks, d_params, d_state, x, labels)[0])
  truncation_key, ranking_key = jax.random.split(jax.random.key(args.seed))

  def report(label, images):
    scores = gan_evaluation.sample_quality(gan_evaluation.from_tanh_range(images), config)
    print(f"{label}: fcd {scores['fcd']:.2f} precision {scores['precision']:.3f} recall {scores['recall']:.3f}",
          flush=True)

  for index, psi in enumerate(truncations):
    report(f"truncation {psi:g}", truncated_samples(generate, jax.random.fold_in(truncation_key, index), psi,
                                                    args.num_samples, config.latent_dim, num_classes, label_shares))
  for index, keep in enumerate(keeps):
    report(f"keep {keep:g} by D", ranked_samples(generate, discriminate, jax.random.fold_in(ranking_key, index),
                                                 keep, args.num_samples, config.latent_dim, num_classes, label_shares))


if __name__ == "__main__":
  exit_on_user_error(main, sys.argv[1:])
