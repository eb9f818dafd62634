"""Scores any model's samples: fcd, precision and recall in the project classifier's feature space.

  python scripts/evaluate_samples.py --samples=runs/vae/samples.npy --dataset=fashion_mnist [--workdir=runs/vae]
  python scripts/evaluate_samples.py --workdir=runs/dcgan [--num_samples=10000]

Prints one line (each score beside its real-data floor, then the provenance); with --workdir also appends
the scores as a test row to WORKDIR/metrics.jsonl, at the step of its last row. With --workdir and no
--samples, the run itself draws the samples (`gen_jax.load_run(workdir).sample(n)`: n = --num_samples or
the run's num_samples, at the run's seed, so by default exactly its samples.npy). With --workdir, --dataset,
--data_dir and --image_size default to the run's, and a --dataset or --image_size other than the run's is
refused (the row would record scores against the wrong data). The logic is `gen_jax.evaluation.sample_quality`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gen_jax.errors import OneLineArgumentParser, UserError, exit_on_user_error  # noqa: E402


def _parse(argv):
  parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", default=None,
                      help="A .npy file of images (N, H, W, C) in [0, 1] (default: drawn by the --workdir run).")
  parser.add_argument("--dataset", default=None,
                      help="The dataset the model was trained on (default with --workdir: the run's).")
  parser.add_argument("--data_dir", default=None, help="TFDS data directory (default: TFDS's, or the run's).")
  parser.add_argument("--workdir", default=None, help="Append the scores to this run's metrics.jsonl.")
  parser.add_argument("--num_samples", type=int, default=0,
                      help="Score the first N samples (0: all; drawn by the run: its num_samples).")
  parser.add_argument("--reference_split", default="train", choices=("train", "test"),
                      help="Real images to compare with: train or test.")
  parser.add_argument("--image_size", type=int, default=0,
                      help="Image side of the classifier (0: native, or the run's).")
  parser.add_argument("--classifier_dir", default=None,
                      help="A classifier folder to use instead of the dataset's default one.")
  return parser.parse_args(argv)


def _check(args):
  """Refuses a bad command line before any work (scoring and sampling take minutes). With --workdir, the
  folder must hold a run (config.json), whose dataset settings fill in the unset options and must match the
  set ones: the scores go into that run's metrics.jsonl."""
  for name in ("num_samples", "image_size"):
    if getattr(args, name) < 0:
      raise UserError(f"--{name}={getattr(args, name)} is not allowed; allowed: 0 or a positive integer")
  if args.classifier_dir and not os.path.isdir(args.classifier_dir):
    raise UserError(f"--classifier_dir={args.classifier_dir} is not a directory; allowed: a classifier folder "
                    "(experiments.classifier prints where it saved one)")
  if args.workdir and not os.path.isdir(args.workdir):
    raise UserError(f"--workdir={args.workdir} is not a directory; allowed: a run's workdir")
  if not args.samples and not args.workdir:
    raise UserError("--samples and --workdir are both missing; allowed: --samples=FILE.npy (with --dataset) or "
                    "--workdir=RUN (its run draws the samples)")
  if args.workdir:
    from gen_jax.runtime import workdir as workdir_lib
    stored = workdir_lib.read_config(args.workdir)
    if not stored or "dataset" not in stored:
      raise UserError(f"--workdir={args.workdir} holds no run (no config.json with a dataset); allowed: a run's "
                      "workdir, whose metrics.jsonl gets the scores")
    for name in ("dataset", "image_size"):
      given, the_runs = getattr(args, name), stored.get(name)
      if given and the_runs and given != the_runs:  # A run's image_size 0 is its native size: not compared.
        raise UserError(f"--{name}={given} but the run in --workdir={args.workdir} has {the_runs}; allowed: the "
                        f"run's (or leave --{name} out), or no --workdir: its metrics.jsonl would get these scores")
    _take_run_settings(args, stored)
  elif args.samples and not args.dataset:
    raise UserError("--dataset is missing; allowed: the dataset the samples' model was trained on (required "
                    "with --samples unless --workdir names a run, whose dataset is then taken)")


def _take_run_settings(args, settings):
  """The run's dataset, data_dir and image_size where the command line leaves them unset."""
  args.dataset = args.dataset or settings["dataset"]
  args.data_dir = args.data_dir or settings.get("data_dir")
  args.image_size = args.image_size or settings.get("image_size") or 0


def _samples_from_run(args):
  """The run's samples (its own seed, so its samples.npy by default), filling in its dataset settings."""
  import gen_jax
  from gen_jax.data import image_data
  run = gen_jax.load_run(args.workdir)
  if not isinstance(run.dataset, image_data.ImageData):
    raise UserError(f"--workdir={args.workdir} is a run on --dataset={run.config.dataset}, not on images; "
                    "allowed: a run on an image dataset (the classifier scores images)")
  count = args.num_samples or run.config.num_samples
  args.num_samples = 0  # Exactly `count` drawn: score them all.
  return run.sample(count)


def main(argv):
  args = _parse(argv)
  _check(args)
  # Imported after parsing and checking: --help and a refused command line stay fast.
  from gen_jax.evaluation import classifier as classifier_lib, sample_quality
  from gen_jax.runtime import run as run_lib
  if args.samples:
    samples = sample_quality.load_samples_file(args.samples)
  else:
    samples = _samples_from_run(args)
  classifier = classifier_lib.load_classifier(args.classifier_dir) if args.classifier_dir else None
  scores = sample_quality.score_samples(
      samples, args.dataset, args.data_dir, num_samples=args.num_samples or None,
      reference_split=args.reference_split, image_size=args.image_size or None, classifier=classifier)
  print(sample_quality.summary_line(scores))
  if args.workdir:
    row, appended = run_lib.append_after_last_row(args.workdir, scores)
    path = os.path.join(args.workdir, "metrics.jsonl")
    # The workdir contract keeps one row per (step, metric names): other scores of the same names at that
    # step are not appended, and saying so beats a silent "appended".
    if appended:
      print(f"recorded in {path} (test row at step {row['step']})")
    else:
      print(f"not appended: {path} already holds a row of these scores at step {row['step']} (one per step)")


if __name__ == "__main__":
  exit_on_user_error(main, sys.argv[1:])
