"""The conditional VAE (Sohn et al. 2015): q(z | x, y) and p(x | z, y), scored by the project's classifier.

Model, objective, step and test ELBO are the VAE family's with `conditional=True` (the one-hot label enters
the encoder and the decoder, MLP or conv); the task is assembled from the same parts with what only a
conditional model has:

- `conditional_accuracy` in every test row: the share of samples drawn for class y that the classifier
  (`gen_jax.evaluation.classifier`) labels y, averaged over the classes, and `conditional_accuracy_<y>`
  per class. Decisions: a sample is the decoder mean at z ~ N(0, I) (the image one looks at, not a
  Bernoulli draw of it); every class is decoded from the same fixed z's, so the classes differ in the
  label only and two evaluations of the same parameters agree exactly. The classifier is loaded (or
  trained and cached) at the first evaluation, so opening a run with `load_run` does not need it; a
  `--classifier` folder is loaded (and checked) before training.
- Its ELBO and `log_likelihood` are of log p(x | y), each image under its own class, which can exceed the
  unconditional VAE's log p(x) by up to log(number of classes) (2.3 nats for ten): compare CVAE rows with
  CVAE rows.
- Label checks before anything trains: a dataset without labels, or with classes that never occur in the
  training data (an npz file whose `y_test` holds a label its `y` lacks, or gaps in the labels), is a
  one-line error, since the decoder could not learn to write such a class.
"""

import dataclasses

import numpy as np

from gen_jax import config as config_lib, salts
from gen_jax.errors import UserError
from gen_jax.evaluation import classifier as classifier_lib
from gen_jax.families import latent_code, vae

NAME = "cvae"
OPERATIONS = vae.OPERATIONS
MAY_CHANGE_ON_RESUME = vae.MAY_CHANGE_ON_RESUME
HELP = vae.HELP | {
    "architecture": "mlp or conv (convolutional encoder/decoder); the one-hot label enters both.",
    "latent_dim": "Dimension of the style code z.",
    "conditional": "Must stay true here (experiments.vae trains the unconditional VAE).",
    "num_images": "Images in each reconstruction/sample grid (samples cycle through the classes).",
    "conditional_samples_per_class": "Samples per class the classifier labels for conditional_accuracy.",
    "classifier": "Folder of a trained classifier (experiments.classifier); empty: the dataset's own, "
                  "trained and cached in the data dir on first use.",
}


@dataclasses.dataclass(frozen=True)
class Config(vae.Config):
  conditional: bool = True
  conditional_samples_per_class: int = 1000  # Samples per class scored at each evaluation.
  classifier: str = ""  # A classifier folder; empty: the dataset's own (trained and cached on first use).


CVAEConfig = Config


def validate(config):
  vae.validate_model(config)
  if not config.conditional:
    raise UserError("--conditional=false is not allowed in experiments.cvae; allowed: --conditional=true "
                    "(use experiments.vae for the unconditional VAE)")
  config_lib.check_positive(config, ("conditional_samples_per_class",))


def check_labels(data, dataset):
  """One line when some class 0..K-1 never occurs among the training labels (K from train and test)."""
  present = set(np.unique(data.train_labels).tolist())
  missing = [label for label in range(data.num_classes) if label not in present]
  if missing:
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    raise UserError(f"--dataset={dataset} has class label(s) {shown} that never occur among its "
                    f"{len(data.train_labels)} training labels; allowed: labels 0..{data.num_classes - 1} "
                    "with every class present in the training data")


def load_classifier(config, data):
  """The classifier that judges the samples; its classes and image shape must be the data's."""
  if config.classifier:
    classifier = classifier_lib.load_classifier(config.classifier)
    classifier.check_trained_on(config.dataset)
  else:
    classifier = classifier_lib.load_or_train_classifier(config.dataset, config.data_dir,
                                                         config.image_size or None)
  if classifier.num_classes != data.num_classes or classifier.image_shape != data.image_shape:
    raise UserError(f"--classifier={classifier.checkpoint_dir} labels {classifier.num_classes} classes of "
                    f"{classifier.image_shape} images, but --dataset={config.dataset} has {data.num_classes} "
                    f"classes of {data.image_shape}; allowed: a classifier trained on the same dataset")
  return classifier


def make_conditional_accuracy(codes, config, load, num_classes):
  """conditional_accuracy(params) -> {'conditional_accuracy': mean over classes, 'conditional_accuracy_<y>'}.

  `codes` decodes (latent_code.CodeFunctions); `load()` returns the classifier, called once, when first needed.
  """
  key = salts.key_for(config.seed, salts.CONDITIONAL_ACCURACY)
  loaded = []

  def conditional_accuracy(params):
    if not loaded:
      loaded.append(load())
    # The model's own prior (the same draws at every evaluation while it learns nothing).
    z = codes.prior_draws(params, key, config.conditional_samples_per_class)
    intended = np.repeat(np.arange(num_classes, dtype=np.int32), len(z))
    predicted = np.concatenate([loaded[0].predict(codes.decode(params, z, np.full(len(z), label, np.int32)))
                                for label in range(num_classes)])
    return classifier_lib.conditional_accuracy(predicted, intended, num_classes)

  return conditional_accuracy


def make_task(config, workdir, mesh):
  """The CVAE as a loop.Task: the VAE's conditional task with the classifier's scores in every test row."""
  parts = latent_code.build(config, mesh)
  check_labels(parts.data, config.dataset)
  load = lambda: load_classifier(config, parts.data)
  if config.classifier:  # A named folder is checked now, before the run touches its workdir.
    classifier = load()
    load = lambda: classifier
  accuracy = make_conditional_accuracy(parts.codes, config, load, parts.data.num_classes)
  return vae.assemble(parts, workdir, mesh, extra_evaluation=accuracy)
