"""The GAN family (Goodfellow et al. 2014): a generator and a discriminator improving in turns, on the
toy mixtures of the mode-coverage papers and on images.

The maths (networks, state, the alternating step under two partitioned optimizers) is `gan_steps.py`; the
evaluation and figures `gan_evaluation.py`; this module holds the family's settings and assembles its task.

It builds on the shared loop but not on `image_training`, whose pieces assume one model, one optimizer and
one batch a step: a GAN step consumes --d_steps_per_g_step real batches (its epoch order is drawn in groups
of that many), keeps two optimizer states in its own TrainState, has no validation split or model
selection, and also trains on toy mixtures that have no image data at all. What the two would share is the
image loading (`image_data.load_image_data`), which both call.
"""

import dataclasses
from typing import Tuple

import jax
import numpy as np

from gen_jax import config as config_lib, objectives, optim
from gen_jax.data import clusters, image_data, preprocessing, toys
from gen_jax.errors import UserError
from gen_jax.evaluation import mode_coverage, sample_quality
from gen_jax.families import gan_evaluation, gan_steps
from gen_jax.models import gan as gan_models
from gen_jax.models import networks
from gen_jax.runtime import loop


NAME = "gan"
OPERATIONS = ("sample",)
MAY_CHANGE_ON_RESUME = config_lib.MAY_CHANGE_ON_RESUME
TOY_STEPS_PER_EPOCH = 1000  # Toy data has no epochs; for logging and --num_epochs an epoch is 1000 steps.
HELP = {
    "dataset": "mixture_1d, ring, grid (toy mixtures), or an image dataset: fashion_mnist (offline), mnist, "
               "npz:PATH, images:DIR or a TFDS catalog name.",
    "num_epochs": "Training epochs (toy data: an epoch is 1000 steps).",
    "binarization": "Images: none (intensities, the default) or static (one fixed draw); the GAN never re-draws, "
                    "so not dynamic.",
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
    "conditional": "Conditional GAN: a label goes to both networks (see --condition_on, --conditioning).",
    "condition_on": "What a conditional GAN's labels are: classes (the dataset's) or clusters (k-means clusters of "
                    "the training images' pixels, no labels needed: the self-conditioned GAN of Liu et al. 2020, "
                    "which samples each cluster by its share of the data).",
    "num_clusters": "--condition_on=clusters: K, the number of k-means clusters.",
    "conditioning": "How the conditional GAN's label enters: concat (one-hot to z and to D's input) or "
                    "projection (class-conditional batch norm in G, a projection discriminator; Miyato & "
                    "Koyama 2018).",
    "conditional_samples_per_class": "Class-conditional GAN: samples per class the classifier labels for "
                                     "conditional_accuracy at each scored evaluation.",
    "num_eval_samples": "Samples scored per evaluation (toys: mode coverage, 2500 in the protocol; images: "
                        "FCD/precision/recall, 0: only at the end).",
    "score_sample_quality": "Images: score FCD, precision and recall with the dataset's classifier (trained "
                            "and cached on first use; skipped for unlabelled data).",
    "num_images": "Images in each sample grid.",
}


@dataclasses.dataclass(frozen=True)
class Config(config_lib.TrainingConfig):
  binarization: str = "none"  # GANs model intensities; binarising is a VAE-likelihood matter.
  architecture: str = "mlp"
  latent_dim: int = 64
  g_hidden_sizes: Tuple[int, ...] = (256, 256, 256)
  d_hidden_sizes: Tuple[int, ...] = (256, 256, 256)
  g_activation: str = "relu"
  d_activation: str = "leaky_relu"
  base_features: int = 64
  g_normalization: str = "none"
  d_normalization: str = "none"
  spectral_norm: bool = False
  packing: int = 1
  loss: str = "non_saturating"
  gradient_penalty_weight: float = 0.0
  r1_weight: float = 0.0
  d_steps_per_g_step: int = 1
  d_learning_rate: float = 0.0  # 0: the generator's --learning_rate.
  d_adam_b1: float = -1.0  # Negative: the generator's --adam_b1.
  d_adam_b2: float = -1.0  # Negative: the generator's --adam_b2.
  ema_decay: float = 0.999  # EMA of G's weights used for evaluation and samples; 0: the raw weights.
  conditional: bool = False
  conditioning: str = "concat"
  condition_on: str = "classes"
  num_clusters: int = 50
  conditional_samples_per_class: int = 1000
  num_eval_samples: int = mode_coverage.DEFAULT_NUM_SAMPLES
  score_sample_quality: bool = True  # Images: FCD/precision/recall (the dataset's classifier, cached).
  num_images: int = 64


GANConfig = Config

# What the toy mixtures leave unread: they are sampled, not loaded, and scored by mode coverage, not by the
# image classifier.
_IMAGES_ONLY = ("num_train_examples", "num_test_examples", "image_size", "data_dir", "binarization", "num_images",
                "score_sample_quality", "conditional_samples_per_class")
# Settings that a value of another setting leaves unread, refused unless at their defaults
# (`config.check_unread`): the layer sizes of the other architecture, K without clusters to count, the
# per-class samples without classes to judge, D's own Adam moments without Adam, and the image settings on a
# toy mixture. (--num_eval_samples is let through with --score_sample_quality=false, so that switching the
# scores off does not mean editing a flagfile's count too.)
UNREAD_SETTINGS = {
    "architecture": {"mlp": ("base_features",),
                     "dcgan": ("g_hidden_sizes", "d_hidden_sizes", "g_activation", "d_activation")},
    "condition_on": {"classes": ("num_clusters",), "clusters": ("conditional_samples_per_class",)},
    "conditional": {False: ("conditional_samples_per_class",)},
    "optimizer": {name: ("d_adam_b1", "d_adam_b2") for name, unread in optim.UNREAD_BY_OPTIMIZER.items()
                  if "adam_b1" in unread},
    "dataset": {name: _IMAGES_ONLY for name in toys.TOY_DATASETS},
}


def validate(config):
  config_lib.validate_common(config)
  config_lib.check_positive(config, ("latent_dim", "base_features", "packing", "d_steps_per_g_step",
                                     "num_images"))
  config_lib.check_sizes(config, ("g_hidden_sizes", "d_hidden_sizes"))
  config_lib.check_choice(config, "architecture", tuple(gan_steps.ARCHITECTURES))
  config_lib.check_choice(config, "loss", tuple(objectives.GAN_LOSSES))
  config_lib.check_choice(config, "g_activation", tuple(networks.ACTIVATIONS))
  config_lib.check_choice(config, "d_activation", tuple(networks.ACTIVATIONS))
  config_lib.check_choice(config, "g_normalization", gan_models.NORMALIZATIONS)
  config_lib.check_choice(config, "d_normalization", gan_models.NORMALIZATIONS)
  config_lib.check_choice(config, "conditioning", tuple(gan_models.CONDITIONINGS))
  config_lib.check_positive(config, ("conditional_samples_per_class", "num_clusters"))
  config_lib.check_choice(config, "condition_on", tuple(LABEL_SOURCES))
  if config.condition_on != "classes" and not config.conditional:
    raise UserError(f"--condition_on={config.condition_on} without --conditional trains an unconditional GAN that "
                    f"ignores them; allowed: --conditional with --condition_on={config.condition_on}")
  if config.conditioning == "projection":
    _validate_projection(config)
  config_lib.check_non_negative(config, ("gradient_penalty_weight", "r1_weight", "d_learning_rate",
                                         "num_eval_samples"))
  for name in ("d_adam_b1", "d_adam_b2"):  # Negative means "the generator's"; otherwise Adam's [0, 1).
    if not getattr(config, name) < 1.0:
      raise UserError(f"--{name}={getattr(config, name)} is not allowed; allowed: below 1 (negative: the "
                      f"generator's --{name[2:]})")
  if not 0.0 <= config.ema_decay < 1.0:
    raise UserError(f"--ema_decay={config.ema_decay} is not allowed; allowed: 0 <= value < 1")
  if config.batch_size % config.packing:
    raise UserError(f"--batch_size={config.batch_size} is not a multiple of --packing={config.packing}; allowed: "
                    "a multiple of the packing")
  if (config.gradient_penalty_weight > 0 or config.r1_weight > 0) and config.d_normalization == "batch":
    raise UserError("--d_normalization='batch' with a gradient penalty couples the examples' gradients; "
                    "allowed: --d_normalization=none with --gradient_penalty_weight or --r1_weight")
  if config.binarization == "dynamic":  # Its batches are never re-drawn: it would train on the intensities.
    raise UserError("--binarization=dynamic is not supported by the GAN, which trains on one fixed set of images; "
                    "allowed: none (intensities) or static (one fixed binarisation)")
  config_lib.check_not_read(config, ("eval_batch_size",), "the GAN")  # Only the latent-code families read it.
  if toys.is_toy(config.dataset):
    if config.architecture != "mlp":
      raise UserError(f"--architecture={config.architecture} on the toy --dataset={config.dataset}; allowed: mlp")
    if config.conditional:
      raise UserError(f"--conditional on the toy --dataset={config.dataset}, which has no labels; allowed: an "
                      "image dataset with labels")
    if config.num_eval_samples == 0:
      raise UserError("--num_eval_samples=0 on a toy dataset scores nothing; allowed: a positive number "
                      f"(the protocol uses {mode_coverage.DEFAULT_NUM_SAMPLES})")
  elif config.score_sample_quality:  # Precision and recall need more samples than neighbours.
    for name in ("num_samples", "num_eval_samples"):
      value = getattr(config, name)
      if 0 < value <= sample_quality.PR_K:
        raise UserError(f"--{name}={value} is too few to score; allowed: at least {sample_quality.PR_K + 1} "
                        f"(precision and recall use the {sample_quality.PR_K}-th nearest neighbour)"
                        + (", or 0: only at the end" if name == "num_eval_samples" else ""))
  for choice, unread_by_value in UNREAD_SETTINGS.items():
    config_lib.check_unread(config, choice, unread_by_value)


def _image_batch_fn(with_labels, d_steps):
  """make_batch: the step's d_steps·B example indices -> d_steps real batches in [−1, 1] (axis 0)."""

  def make_batch(data, indices, key):
    del key
    indices = indices.reshape(d_steps, -1)
    batch = {"x": 2.0 * preprocessing.to_unit_interval(data["images"][indices]) - 1.0}
    if with_labels:
      batch["labels"] = data["labels"][indices]
    return batch

  return make_batch


def toy_batch_fn(toy, batch_size, d_steps):
  def make_batch(data, step_input, key):
    del data, step_input
    return {"x": toy.sample(key, d_steps * batch_size).reshape(d_steps, batch_size, toy.dim)}

  return make_batch


def _validate_projection(config):
  """What the projection discriminator and class-conditional batch norm need: labels, G's batch norm
  (the only way the label reaches G), and one example per D output (one label to project)."""
  if not config.conditional:
    raise UserError("--conditioning=projection without --conditional has no labels to project; allowed: "
                    "--conditional with --conditioning=projection, or --conditioning=concat")
  if config.g_normalization != "batch":
    raise UserError(f"--conditioning=projection with --g_normalization={config.g_normalization} gives G no "
                    "label (it enters through class-conditional batch norm); allowed: --g_normalization=batch")
  if config.packing != 1:
    raise UserError(f"--conditioning=projection with --packing={config.packing}: a pack has several labels to "
                    "project; allowed: --packing=1")


def _class_labels(dataset, config):
  image_data.require_labels(dataset, config.dataset, "--conditional")
  return dataset.train_labels, dataset.num_classes, None


def _cluster_labels(dataset, config):
  count = len(dataset.train_images)
  if config.num_clusters > count:
    raise UserError(f"--num_clusters={config.num_clusters} exceeds the {count} training images of "
                    f"--dataset={config.dataset}; allowed: at most {count}")
  # NumPy's division, not preprocessing.to_unit_interval: XLA's float32 x / 255 differs from it in the last bit
  # for some pixel values, which would move some images between clusters and change the published runs.
  pixels = dataset.train_images.reshape(count, -1).astype(np.float32) / 255.0
  assignments, _ = clusters.kmeans(pixels, config.num_clusters, config.seed)
  return assignments, config.num_clusters, tuple(clusters.shares(assignments, config.num_clusters).tolist())


# --condition_on -> (dataset, config) -> (training labels, number of labels, each label's share or None for
# uniform). classes: the dataset's labels, drawn uniformly for the generator. clusters: k-means clusters of the
# training pixels, drawn by their share of the data (self-conditioning, Liu et al. 2020).
LABEL_SOURCES = {"classes": _class_labels, "clusters": _cluster_labels}


def image_labels(config, dataset):
  """(training labels, number of labels, each label's share or None) of an image GAN; all None unconditional."""
  if not config.conditional:
    return None, None, None
  return LABEL_SOURCES[config.condition_on](dataset, config)


def make_task(config, workdir, mesh):
  """The GAN as a loop.Task."""
  d_steps = config.d_steps_per_g_step
  toy = toys.is_toy(config.dataset)
  if toy:
    dataset = toys.load_toy(config.dataset)
    data_shape, num_classes, label_shares, steps_per_epoch = (dataset.dim,), None, None, TOY_STEPS_PER_EPOCH
    data = None
    step_inputs = lambda first, count: np.arange(first, first + count)
    make_batch = toy_batch_fn(dataset, config.batch_size, d_steps)
  else:
    dataset = image_data.load_image_data(config)
    data_shape, data = dataset.image_shape, dataset.device_data()
    labels, num_classes, label_shares = image_labels(config, dataset)
    if labels is not None:
      data["labels"] = labels
    step_inputs, steps_per_epoch = loop.epoch_permutation_indices(
        len(dataset.train_images), config.batch_size * d_steps, config.seed)
    make_batch = _image_batch_fn(config.conditional, d_steps)
  networks = gan_steps.build_networks(config, data_shape, num_classes, label_shares)
  schedule = loop.Schedule.from_config(config, steps_per_epoch, examples_per_step=config.batch_size * d_steps)
  init, step = gan_steps.bind_steps(config, networks, data_shape, schedule.num_steps, steps_per_epoch)
  if toy:
    evaluation = gan_evaluation.ToyEvaluation(networks, config, dataset, workdir)
  else:
    evaluation = gan_evaluation.ImageEvaluation(networks, config, workdir, schedule.num_steps,
                                                labelled=dataset.num_classes is not None)

  def operations(state):
    return {"sample": lambda count, seed, labels: evaluation.sample(state, count, seed, labels)}

  return loop.Task(
      # Jitted: one compilation instead of an eager dispatch (and compilation) per initialiser operation.
      init_state=jax.jit(init), update=step, make_batch=make_batch, data=data, step_inputs=step_inputs,
      evaluate=evaluation.evaluate, schedule=schedule, on_evaluation=evaluation.on_evaluation,
      finalize=evaluation.finalize, operations=operations, dataset=dataset, headline="d_loss")
