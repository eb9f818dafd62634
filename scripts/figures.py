"""The lecture's figures, each drawn from trained workdirs, with the numbers that say the same thing.

  python scripts/figures.py interpolation --ae_workdir=runs/autoencoder --vae_workdir=runs/vae
  python scripts/figures.py style_grid --workdir=runs/cvae
  python scripts/figures.py manifold --workdir=runs/vae_latent2
  python scripts/figures.py samples --workdir=runs/vae
  python scripts/figures.py kl_curves --workdir=runs/vae
  python scripts/figures.py compare --vae_workdir=runs/vae --gan_workdir=runs/dcgan

Every figure is a PNG in the (first) workdir's `images/`; where a number can say what the picture shows it
is printed and saved beside the PNG as JSON with the same name. A workdir is opened with `gen_jax.load_run`
(its config.json and newest checkpoint; the best-validation one for a run that selects on a
validation split), so any run of experiments.vae, experiments.cvae or
experiments.autoencoder can be drawn, while it trains or after; the numeric helpers are figure_maths.py.

Decisions:
- The images shown and scored are the dataset's intensities in [0, 1], not the binarised draws a run may
  train on: decoder means are intensities, and so is what the classifier was trained on. The encoders take
  any value in [0, 1].
- The interpolation is judged by the project's classifier (`gen_jax.evaluation.classifier`): the mean of
  its top softmax probability along the path over many test pairs from different classes, for the
  autoencoder, the VAE and a pixel-space cross-fade (the "ghost" that a code space should avoid). The
  classifier is a judge trained on real images, so its confidence measures how much an image looks like
  some real class; real test images give the ceiling.
- Samples are judged against their nearest training images (Euclidean in pixel space, over the whole
  training split): a model that copied its data would sit at distance ~0, while new real test images show
  the distance one should expect. Blur is measured as the mean absolute difference of neighbouring pixels
  (an image's total variation per pixel), which pixel-wise likelihoods drive down.
"""

import argparse
import collections
import json
import os
import sys

import numpy as np

import gen_jax
from gen_jax import families, files, plots
from gen_jax.data import load_split
from gen_jax.errors import OneLineArgumentParser, UserError, exit_on_user_error
from gen_jax.evaluation import classifier as classifier_lib, sample_quality as sample_quality_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # figure_maths, when loaded by path (tests).
from figure_maths import (cross_fade, interpolation_paths, kl_curve_values, manifold_codes,  # noqa: E402
                          nearest_neighbours, pairs_of_different_classes, top_probability, total_variation)

# A run's data as the figures show it: the dataset's intensities in [0, 1], float32 (N, H, W, C) (labels
# and num_classes None for unlabelled data).
Intensities = collections.namedtuple("Intensities", "train test test_labels num_classes")


def open_run(workdir, need="encode"):
  """(`gen_jax.load_run(workdir)`, its `Intensities`) for a run that has the operation `need`.

  The intensities come from `load_split` with the run's settings, not from `run.dataset`, whose test split
  is binarised when the run binarises (see the module docstring).
  """
  run = gen_jax.load_run(workdir)
  if need not in run.operations:  # Most figures decode codes (or prior draws) of the run's images.
    raise UserError(f"--workdir={workdir} is a {run.family} run, which cannot {need}; allowed: a run of the "
                    f"families that can ({', '.join(families.families_with(need))})")
  config = run.config
  kwargs = dict(data_dir=config.data_dir, image_size=config.image_size or None)
  train = load_split(config.dataset, "train", num_examples=config.num_train_examples or None, **kwargs)
  test = load_split(config.dataset, "test", num_examples=config.num_test_examples or None, **kwargs)
  unit = lambda images: np.asarray(images, np.float32) / 255.0
  return run, Intensities(unit(train.images), unit(test.images), test.labels, train.num_classes)


def _conditional(run):
  """Whether a latent-code run (the figures that call this open only those) encodes under the class label."""
  return run.config.networks_take_labels()


def _images_dir(workdir):
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir} is a file; allowed: a directory")
  path = os.path.join(workdir, "images")
  os.makedirs(path, exist_ok=True)
  return path


def _require_unconditional(run, figure):
  if _conditional(run):
    raise UserError(f"--workdir={run.workdir} is a conditional VAE; allowed for {figure}: a VAE or "
                    "autoencoder workdir (the CVAE has its own figure, style_grid)")


def _classifier_for(run, data, classifier_dir):
  if classifier_dir:
    classifier = classifier_lib.load_classifier(classifier_dir)
    classifier.check_trained_on(run.config.dataset)
  else:
    classifier = classifier_lib.load_or_train_classifier(run.config.dataset, run.config.data_dir,
                                                         run.config.image_size or None)
  if classifier.image_shape != data.test.shape[1:]:
    raise UserError(f"--classifier={classifier.checkpoint_dir} takes {classifier.image_shape} images, the run "
                    f"{run.workdir} makes {data.test.shape[1:]}; allowed: the run's dataset's classifier")
  return classifier


def _save(figure, path):
  figure.savefig(path, dpi=120)
  plots.pyplot().close(figure)
  print(f"wrote {path}")


# --- AE vs VAE interpolation -------------------------------------------------------------------------------


def interpolation_figure(ae, vae, classifier, num_points=9, num_pairs=200, num_shown=3, seed=0):
  """The AE and VAE decode the line between two test codes; classifier confidence along the path.

  `ae` and `vae` are `open_run` pairs (run, intensities).
  """
  (ae_run, ae_data), (vae_run, vae_data) = ae, vae
  for run in (ae_run, vae_run):
    _require_unconditional(run, "interpolation")
  if ae_run.config.dataset != vae_run.config.dataset or ae_data.test.shape != vae_data.test.shape:
    raise UserError(f"--ae_workdir={ae_run.workdir} ({ae_run.config.dataset}) and --vae_workdir="
                    f"{vae_run.workdir} ({vae_run.config.dataset}) use different data; allowed: runs on the "
                    "same dataset and test split")
  if len(vae_data.test) < 2:
    raise UserError(f"the test split of {vae_run.config.dataset} holds {len(vae_data.test)} image(s); "
                    "allowed: at least 2 to interpolate between")
  ts = np.linspace(0.0, 1.0, num_points, dtype=np.float32)
  first, second = pairs_of_different_classes(len(vae_data.test), vae_data.test_labels, num_pairs, seed)
  x_a, x_b = vae_data.test[first], vae_data.test[second]
  paths = {
      "pixels": cross_fade(x_a, x_b, ts),
      "autoencoder": interpolation_paths(ae_run.encode, ae_run.decode, x_a, x_b, ts),
      "vae": interpolation_paths(vae_run.encode, vae_run.decode, x_a, x_b, ts),
  }
  confidence = {name: top_probability(classifier.logits(images.reshape(-1, *images.shape[2:])))
                .reshape(num_pairs, num_points).mean(axis=0) for name, images in paths.items()}
  middle = num_points // 2
  numbers = {
      "t": ts.tolist(), "num_pairs": num_pairs,
      "mean_classifier_confidence": {name: values.tolist() for name, values in confidence.items()},
      "midpoint_confidence": {name: float(values[middle]) for name, values in confidence.items()},
      "real_test_image_confidence": float(np.mean(top_probability(classifier.logits(x_a)))),
      "classifier": classifier.checkpoint_dir, "classifier_test_accuracy": classifier.test_accuracy,
      "ae_workdir": ae_run.workdir, "vae_workdir": vae_run.workdir,
  }

  shown = min(num_shown, num_pairs)
  names = ("pixels", "autoencoder", "vae")
  figure, axes = plots.pyplot().subplots(2, 1, figsize=(num_points * 0.55 + 1.5, shown * 1.7 + 3.2),
                                         gridspec_kw={"height_ratios": [shown * 1.7, 3.0]})
  rows = np.stack([paths[name][pair] for pair in range(shown) for name in names])
  plots.show_image_grid(axes[0], rows.reshape(-1, *rows.shape[2:]), num_points)
  height = rows.shape[2] + 1
  axes[0].set_yticks([(index + 0.5) * height for index in range(len(rows))])
  axes[0].set_yticklabels([name for _ in range(shown) for name in names], fontsize=7)
  axes[0].set_xticks([(index + 0.5) * (rows.shape[3] + 1) for index in range(num_points)])
  axes[0].set_xticklabels([f"{t:.2g}" for t in ts], fontsize=7)
  axes[0].set_title("decoding (1-t)·z_a + t·z_b", fontsize=9)
  for index, name in enumerate(names):
    axes[1].plot(ts, confidence[name], "o-", color=f"C{index}", label=name)
  axes[1].axhline(numbers["real_test_image_confidence"], color="k", linestyle=":", label="real test images")
  axes[1].set_xlabel("t")
  axes[1].set_ylabel("classifier confidence")
  axes[1].set_title(f"mean top softmax probability over {num_pairs} test pairs", fontsize=9)
  axes[1].legend(fontsize=7)
  axes[1].grid(alpha=0.3)
  figure.tight_layout()
  return figure, numbers


# --- CVAE style grid ---------------------------------------------------------------------------------------


def style_grid_figure(run, data, classifier, num_sources=8, num_scored=1000):
  """Style codes z = μ(x, y) of test images decoded with every label: rows sources, columns classes."""
  if not _conditional(run):
    raise UserError(f"--workdir={run.workdir} is not a conditional VAE; allowed for style_grid: a workdir "
                    "of experiments.cvae")
  num_classes = data.num_classes
  count = min(max(num_sources, num_scored), len(data.test))
  x, y = data.test[:count], data.test_labels[:count]
  z = run.encode(x, y)
  every_label = np.tile(np.arange(num_classes), count)
  decoded = run.decode(np.repeat(z, num_classes, axis=0), every_label)
  predictions = classifier.predict(decoded).reshape(count, num_classes)
  per_class = (predictions == np.arange(num_classes)[None]).mean(axis=0)
  numbers = {"num_sources_scored": int(count), "transfer_accuracy": float(per_class.mean()),
             "transfer_accuracy_per_class": per_class.tolist(), "classifier": classifier.checkpoint_dir,
             "classifier_test_accuracy": classifier.test_accuracy, "workdir": run.workdir}
  shown = min(num_sources, count)
  decoded = decoded.reshape(count, num_classes, *decoded.shape[1:])[:shown]
  rows = np.concatenate([x[:shown, None], decoded], axis=1)
  figure, axis = plots.pyplot().subplots(figsize=((num_classes + 1) * 0.6 + 0.6, shown * 0.6 + 0.9))
  plots.show_image_grid(axis, rows.reshape(-1, *rows.shape[2:]), num_classes + 1)
  width = rows.shape[3] + 1
  axis.set_xticks([(index + 0.5) * width for index in range(num_classes + 1)])
  axis.set_xticklabels(["source"] + [str(label) for label in range(num_classes)], fontsize=7)
  axis.set_yticks([])
  axis.set_title(f"one style z per row, every class; classifier agrees {per_class.mean():.1%}", fontsize=9)
  figure.tight_layout()
  return figure, numbers


# --- Latent manifold of a 2-D VAE --------------------------------------------------------------------------


def manifold_figures(run, data, grid_size=20, num_scatter=5000):
  """(decoded Φ⁻¹ grid figure, scatter of test codes coloured by class figure)."""
  _require_unconditional(run, "manifold")
  if run.config.latent_dim != 2:
    raise UserError(f"--workdir={run.workdir} has --latent_dim={run.config.latent_dim}; allowed for "
                    "manifold: 2 (train with experiments/configs/vae_latent2_fashion_mnist.cfg)")
  decoded = run.decode(manifold_codes(grid_size))
  grid_figure, axis = plots.pyplot().subplots(figsize=(7, 7))
  plots.show_image_grid(axis, decoded, grid_size)
  axis.set_axis_off()
  axis.set_title(f"decoder means at z = Φ⁻¹(u) on a {grid_size}×{grid_size} grid of u", fontsize=9)
  grid_figure.tight_layout()

  count = min(num_scatter, len(data.test))
  codes = run.encode(data.test[:count])  # Unconditional (above): the labels only colour the points.
  scatter_figure, axis = plots.pyplot().subplots(figsize=(6, 5))
  if data.test_labels is None:
    axis.scatter(codes[:, 0], codes[:, 1], s=2, alpha=0.5)
  else:
    points = axis.scatter(codes[:, 0], codes[:, 1], c=data.test_labels[:count], cmap="tab10", s=2, alpha=0.6,
                          vmin=-0.5, vmax=data.num_classes - 0.5)
    scatter_figure.colorbar(points, ax=axis, ticks=range(data.num_classes), label="class")
  axis.set_xlabel("z₁ (encoder mean)")
  axis.set_ylabel("z₂ (encoder mean)")
  axis.set_title(f"{count} test codes", fontsize=9)
  scatter_figure.tight_layout()
  return grid_figure, scatter_figure


# --- Samples vs reconstructions vs nearest training images -------------------------------------------------


def samples_figure(run, data, num_shown=12, num_scored=500, seed=None):
  """Rows: samples, their nearest training images, test images, their reconstructions.

  The samples are `run.sample` (decoder means at prior draws; the CVAE's cycle through the classes), at the
  run's own seed unless `seed` is given.
  """
  count = min(max(num_shown, num_scored), len(data.test))
  samples = run.sample(count, seed=seed)
  test_x = data.test[:count]
  test_labels = data.test_labels[:count] if _conditional(run) else None
  reconstructions = run.decode(run.encode(test_x, test_labels), test_labels)
  sample_index, sample_distance = nearest_neighbours(samples, data.train)
  _, test_distance = nearest_neighbours(test_x, data.train)
  sharpness = {name: float(total_variation(images).mean()) for name, images in
               (("samples", samples), ("reconstructions", reconstructions), ("test_images", test_x))}
  numbers = {
      "num_scored": int(count), "family": run.family,
      "nearest_training_distance": {"samples": float(sample_distance.mean()),
                                    "test_images": float(test_distance.mean())},
      "min_nearest_training_distance_of_samples": float(sample_distance.min()),
      "total_variation": sharpness, "workdir": run.workdir,
  }
  shown = min(num_shown, count)
  rows = np.concatenate([samples[:shown], data.train[sample_index[:shown]], test_x[:shown],
                         reconstructions[:shown]])
  names = ["samples", "nearest training", "test images", "reconstructions"]
  figure, axis = plots.pyplot().subplots(figsize=(shown * 0.6 + 1.4, 3.4))
  plots.show_image_grid(axis, rows, shown)
  height = rows.shape[1] + 1
  axis.set_yticks([(index + 0.5) * height for index in range(len(names))])
  axis.set_yticklabels(names, fontsize=7)
  axis.set_xticks([])
  axis.set_title(f"pixel distance to nearest training image: samples {sample_distance.mean():.2f}, test "
                 f"{test_distance.mean():.2f}; total variation: samples {sharpness['samples']:.3f}, test "
                 f"{sharpness['test_images']:.3f}", fontsize=7)
  figure.tight_layout()
  return figure, numbers


# --- The lecture's comparison: VAE samples, GAN samples, real images ---------------------------------------


def comparison_figure(vae, gan, classifier, num_shown=10, num_scored=10000, num_distances=1000):
  """Rows: VAE samples, GAN samples, real test images, each above its nearest training images; and per row
  its blur (total variation; real images set the level), pixel distance to the nearest training image (a
  copier sits near 0) and FCD / precision / recall against the training images (real test images: the floor).

  `vae` and `gan` are `open_run` results on the same dataset; the samples are each run's own
  (`run.sample` at its seed), `num_scored` of them scored by `classifier`'s features, `num_distances` of them
  searched for neighbours.
  """
  (vae_run, data), (gan_run, gan_data) = vae, gan
  if vae_run.config.dataset != gan_run.config.dataset or data.train.shape[1:] != gan_data.train.shape[1:]:
    raise UserError(f"--vae_workdir is on {vae_run.config.dataset} {data.train.shape[1:]} but --gan_workdir on "
                    f"{gan_run.config.dataset} {gan_data.train.shape[1:]}; allowed: runs on the same images")
  count = min(num_scored, len(data.test))
  sets = {"VAE samples": vae_run.sample(count), "GAN samples": gan_run.sample(count),
          "real test images": data.test[:count]}
  config = vae_run.config
  numbers, rows = {"num_scored": count, "num_distances": min(num_distances, count),
                   "vae_workdir": vae_run.workdir, "gan_workdir": gan_run.workdir, "rows": {}}, []
  for name, images in sets.items():
    scores = sample_quality_lib.score_samples(images, config.dataset, config.data_dir,
                                              image_size=config.image_size or None, classifier=classifier)
    index, distance = nearest_neighbours(images[:numbers["num_distances"]], data.train)
    numbers["rows"][name] = {"fcd": scores["fcd"], "precision": scores["precision"], "recall": scores["recall"],
                             "total_variation": float(total_variation(images).mean()),
                             "nearest_training_distance": float(distance.mean())}
    rows += [images[:num_shown], data.train[index[:num_shown]]]
  numbers["table"] = ["| images | FCD | precision | recall | blur (total variation) | distance to nearest training |",
                      "|---|---|---|---|---|---|"] + [
      f"| {name} | {row['fcd']:.2f} | {row['precision']:.3f} | {row['recall']:.3f} | {row['total_variation']:.3f} "
      f"| {row['nearest_training_distance']:.2f} |" for name, row in numbers["rows"].items()]
  names = [label for name in sets for label in (name, "nearest training")]
  grid = np.concatenate(rows)
  figure, axis = plots.pyplot().subplots(figsize=(num_shown * 0.6 + 1.6, len(names) * 0.62 + 0.9))
  plots.show_image_grid(axis, grid, num_shown)
  height = grid.shape[1] + 1
  axis.set_yticks([(index + 0.5) * height for index in range(len(names))])
  axis.set_yticklabels(names, fontsize=7)
  axis.set_xticks([])
  axis.set_title(" | ".join(f"{name.split()[0]}: FCD {row['fcd']:.1f}, blur {row['total_variation']:.3f}"
                            for name, row in numbers["rows"].items()), fontsize=7)
  figure.tight_layout()
  return figure, numbers


# --- KL regulariser curves ---------------------------------------------------------------------------------


def kl_curves_figure(num_points=601, limit=3.0):
  s = np.linspace(-limit, limit, num_points, dtype=np.float32)
  exp_s, one_plus_s, difference = kl_curve_values(s)
  minimum = int(np.argmin(difference))
  numbers = {"argmin_log_variance": float(s[minimum]), "min_difference": float(difference[minimum]),
             "source": "2 * gen_jax.objectives.kl_to_standard_normal(mean=0, log_variance=s)"}
  figure, axis = plots.pyplot().subplots(figsize=(5.5, 4))
  axis.plot(s, exp_s, label="exp(σ)")
  axis.plot(s, one_plus_s, label="1 + σ")
  axis.plot(s, difference, label="exp(σ) − (1 + σ) = 2·KL(N(0, e^σ) ‖ N(0, 1))")
  axis.plot([s[minimum]], [difference[minimum]], "ko")
  axis.annotate("minimum at σ = 0 (variance 1)", (s[minimum], difference[minimum]), xytext=(-2.9, 4.0),
                arrowprops={"arrowstyle": "->"}, fontsize=8)
  axis.set_xlabel("σ (the encoder's log-variance output, log σ²)")
  axis.set_ylim(-2.5, 8)
  axis.axhline(0.0, color="gray", linewidth=0.5)
  axis.legend(fontsize=7)
  axis.grid(alpha=0.3)
  figure.tight_layout()
  return figure, numbers


# --- Command line ------------------------------------------------------------------------------------------


def _positive(text):
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a positive integer")
  return value


def _parser():
  parser = OneLineArgumentParser(prog="scripts/figures.py", description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="figure", required=True, parser_class=OneLineArgumentParser)
  command = commands.add_parser("interpolation", help="AE vs VAE decodes between two test codes")
  command.add_argument("--ae_workdir", required=True, help="the autoencoder run (experiments.autoencoder)")
  command.add_argument("--vae_workdir", required=True, help="the figure goes into its images/")
  command.add_argument("--num_points", type=_positive, default=9, help="decodes along each path, ends included")
  command.add_argument("--num_pairs", type=_positive, default=500, help="test pairs averaged for the numbers")
  command.add_argument("--classifier", default="", help="classifier folder (default: the dataset's own)")
  command = commands.add_parser("style_grid", help="CVAE: each row one style z, decoded with every label")
  command.add_argument("--workdir", required=True, help="a CVAE run (experiments.cvae); the figure goes into its "
                       "images/")
  command.add_argument("--num_sources", type=_positive, default=8, help="rows: test images whose style is shown")
  command.add_argument("--num_scored", type=_positive, default=1000,
                       help="style codes whose decodes the classifier labels, for the share of the asked class")
  command.add_argument("--classifier", default="", help="classifier folder (default: the dataset's own)")
  command = commands.add_parser("manifold", help="2-D latent VAE: Φ⁻¹ grid and test-code scatter")
  command.add_argument("--workdir", required=True, help="a VAE run with --latent_dim=2; the figures go into its "
                       "images/")
  command.add_argument("--grid_size", type=_positive, default=20, help="side of the grid of decoded codes")
  command.add_argument("--num_scatter", type=_positive, default=5000, help="test images whose codes are plotted")
  command = commands.add_parser("samples", help="samples, nearest training images, reconstructions")
  command.add_argument("--workdir", required=True, help="a VAE, CVAE or autoencoder run; the figure goes into its "
                       "images/")
  command.add_argument("--num_shown", type=_positive, default=12, help="images per row")
  command.add_argument("--num_scored", type=_positive, default=500,
                       help="samples and test images measured (distance to the nearest training image, blur)")
  command = commands.add_parser("compare", help="VAE vs GAN samples vs real images: neighbours, blur, scores")
  command.add_argument("--vae_workdir", required=True, help="the figure goes into its images/")
  command.add_argument("--gan_workdir", required=True, help="the GAN run (experiments.gan) on the same dataset")
  command.add_argument("--num_shown", type=_positive, default=10, help="images per row")
  command.add_argument("--num_scored", type=_positive, default=10000,
                       help="samples of each run scored by FCD, precision and recall")
  command.add_argument("--num_distances", type=_positive, default=1000,
                       help="samples searched for their nearest training image")
  command.add_argument("--classifier", default="", help="classifier folder (default: the dataset's own)")
  command = commands.add_parser("kl_curves", help="exp(σ), 1 + σ and their difference (the KL)")
  command.add_argument("--workdir", required=True, help="any folder; the figure goes into its images/")
  return parser


def _report(png_path, numbers):
  json_path = os.path.splitext(png_path)[0] + ".json"
  files.write_json(json_path, numbers)
  headline = {key: value for key, value in numbers.items()
              if not isinstance(value, list) and not (isinstance(value, dict)
                                                      and any(isinstance(v, list) for v in value.values()))}
  print(json.dumps(headline))
  print(f"wrote {json_path}")


def _draw_interpolation(args):
  ae, vae = open_run(args.ae_workdir), open_run(args.vae_workdir)
  figure, numbers = interpolation_figure(ae, vae, _classifier_for(*vae, args.classifier), args.num_points,
                                         args.num_pairs)
  return {os.path.join(_images_dir(vae[0].workdir), "interpolation_ae_vs_vae.png"): figure}, numbers


def _draw_style_grid(args):
  run, data = open_run(args.workdir)
  figure, numbers = style_grid_figure(run, data, _classifier_for(run, data, args.classifier), args.num_sources,
                                      args.num_scored)
  return {os.path.join(_images_dir(run.workdir), "cvae_style_grid.png"): figure}, numbers


def _draw_manifold(args):
  run, data = open_run(args.workdir)
  grid_figure, scatter_figure = manifold_figures(run, data, args.grid_size, args.num_scatter)
  images = _images_dir(run.workdir)
  return {os.path.join(images, "latent_manifold.png"): grid_figure,
          os.path.join(images, "latent_scatter.png"): scatter_figure}, None


def _draw_samples(args):
  run, data = open_run(args.workdir)
  figure, numbers = samples_figure(run, data, args.num_shown, args.num_scored)
  return {os.path.join(_images_dir(run.workdir), "samples_vs_nearest_training.png"): figure}, numbers


def _draw_compare(args):
  vae, gan = open_run(args.vae_workdir), open_run(args.gan_workdir, need="sample")
  figure, numbers = comparison_figure(vae, gan, _classifier_for(*vae, args.classifier), args.num_shown,
                                      args.num_scored, args.num_distances)
  print("\n".join(numbers["table"]))
  return {os.path.join(_images_dir(vae[0].workdir), "vae_vs_gan_vs_real.png"): figure}, numbers


def _draw_kl_curves(args):
  figure, numbers = kl_curves_figure()
  return {os.path.join(_images_dir(args.workdir), "kl_regulariser_curves.png"): figure}, numbers


# subcommand -> draw(args) -> ({png path: figure}, the numbers saved beside the first PNG, or None).
DRAWERS = {"interpolation": _draw_interpolation, "style_grid": _draw_style_grid, "manifold": _draw_manifold,
           "samples": _draw_samples, "compare": _draw_compare, "kl_curves": _draw_kl_curves}


def draw(args):
  """Draws the figure `args.figure` asks for; returns the paths written."""
  figures, numbers = DRAWERS[args.figure](args)
  for path, figure in figures.items():
    _save(figure, path)
  paths = list(figures)
  if numbers is None:
    return paths
  _report(paths[0], numbers)
  return paths + [os.path.splitext(paths[0])[0] + ".json"]


def main(argv=None):
  return exit_on_user_error(draw, _parser().parse_args(argv))


if __name__ == "__main__":
  main()
