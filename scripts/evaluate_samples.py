"""Scores any model's samples: fcd, precision and recall in the project classifier's feature space.

  python scripts/evaluate_samples.py --samples=runs/vae/samples.npy --dataset=fashion_mnist [--workdir=runs/vae]

Prints one line (each score beside its real-data floor, then the provenance); with --workdir also appends
the scores as a test row to WORKDIR/metrics.jsonl. The logic is `gen_jax.evaluation.sample_quality`.
"""

import argparse
import os
import sys

from gen_jax.errors import UserError


class _OneLineErrors(argparse.ArgumentParser):
  """A bad command line is a user's mistake: one line on stderr and exit 2, as in every experiment."""

  def error(self, message):
    print(f"error: {message}; see --help", file=sys.stderr)
    sys.exit(2)


def _parse(argv):
  parser = _OneLineErrors(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", required=True, help="A .npy file of images (N, H, W, C) in [0, 1].")
  parser.add_argument("--dataset", required=True, help="The dataset the model was trained on.")
  parser.add_argument("--data_dir", default=None, help="TFDS data directory (default: TFDS's).")
  parser.add_argument("--workdir", default=None, help="Append the scores to this run's metrics.jsonl.")
  parser.add_argument("--num_samples", type=int, default=0, help="Score the first N samples (0: all).")
  parser.add_argument("--reference_split", default="train", help="Real images to compare with: train or test.")
  parser.add_argument("--image_size", type=int, default=0, help="Image side of the classifier (0: native).")
  parser.add_argument("--classifier_dir", default=None,
                      help="A classifier folder to use instead of the dataset's default one.")
  return parser.parse_args(argv)


def main(argv):
  args = _parse(argv)
  from gen_jax.evaluation import classifier as classifier_lib, sample_quality  # After parsing: --help is fast.
  for name in ("num_samples", "image_size"):
    if getattr(args, name) < 0:
      raise UserError(f"--{name}={getattr(args, name)} is not allowed; allowed: 0 or a positive integer")
  if args.workdir and not os.path.isdir(args.workdir):  # Before the scoring, not after it.
    raise UserError(f"--workdir={args.workdir} is not a directory; allowed: a run's workdir")
  samples = sample_quality.load_samples_file(args.samples)
  classifier = classifier_lib.load_classifier(args.classifier_dir) if args.classifier_dir else None
  scores = sample_quality.score_samples(
      samples, args.dataset, args.data_dir, num_samples=args.num_samples or None,
      reference_split=args.reference_split, image_size=args.image_size or None, classifier=classifier)
  print(sample_quality.summary_line(scores))
  if args.workdir:
    sample_quality.write_scores_row(args.workdir, scores)
    print(f"appended to {args.workdir}/metrics.jsonl")


if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except UserError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
