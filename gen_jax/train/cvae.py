"""The conditional VAE: q(z | x, y) and p(x | z, y), scored by the project's classifier.

The model, objective, step, evaluation, figures and workdir are the VAE family's with `conditional=True`
(the one-hot label enters the encoder and the decoder, MLP or conv). This module adds what only a
conditional model has, wrapped around `vae.make_task`'s task with `dataclasses.replace`:

- `conditional_accuracy` in every test row: the share of samples drawn for class y that the classifier
  (`gen_jax.evaluation.classifier`) labels y, averaged over the classes, and `conditional_accuracy_<y>`
  per class. Decisions: a sample is the decoder mean at z ~ N(0, I) (the image one looks at, not a
  Bernoulli draw of it); every class is decoded from the same fixed z's, so the classes differ in the
  label only and two evaluations of the same parameters agree exactly.
- Label checks before anything trains: a dataset without labels, or with classes that never occur in the
  training data (an npz file whose `y_test` holds a label its `y` lacks, or gaps in the labels), is a
  one-line error, since the decoder could not learn to write such a class.
"""

import dataclasses

import jax
import numpy as np

from gen_jax import objectives
from gen_jax.errors import UserError
from gen_jax.evaluation import classifier as classifier_lib
from gen_jax.models.vae import VAE
from gen_jax.train import config as config_lib, loop, parallel, vae

# Folded into the seed for the z's the conditional accuracy decodes (fixed for the whole run).
_ACCURACY_KEY = 0xC1A5


@dataclasses.dataclass(frozen=True)
class CVAEConfig(vae.VAEConfig):
  conditional: bool = True
  conditional_samples_per_class: int = 1000  # Samples per class scored at each evaluation.
  classifier: str = ""  # A classifier folder; empty: the dataset's own (trained and cached on first use).


def validate(config):
  vae.validate(config)
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
  else:
    classifier = classifier_lib.load_or_train_classifier(config.dataset, config.data_dir,
                                                         config.image_size or None)
  if classifier.num_classes != data.num_classes or classifier.image_shape != data.image_shape:
    raise UserError(f"--classifier={classifier.checkpoint_dir} labels {classifier.num_classes} classes of "
                    f"{classifier.image_shape} images, but --dataset={config.dataset} has {data.num_classes} "
                    f"classes of {data.image_shape}; allowed: a classifier trained on the same dataset")
  return classifier


def make_conditional_accuracy(model, config, classifier, num_classes):
  """conditional_accuracy(params) -> {'conditional_accuracy': mean over classes, 'conditional_accuracy_<y>'}."""
  key = jax.random.fold_in(jax.random.key(config.seed), _ACCURACY_KEY)
  z = jax.random.normal(key, (config.conditional_samples_per_class, config.latent_dim))
  chunk_size = config.eval_batch_size

  @jax.jit
  def decode_mean(params, z, labels):
    output = model.apply({"params": params}, z, labels, method=VAE.decode)
    return objectives.decoder_mean(config.likelihood, output, config.gaussian_std or None)

  def conditional_accuracy(params):
    per_class = {}
    for label in range(num_classes):
      correct = 0
      for start in range(0, len(z), chunk_size):
        chunk = z[start:start + chunk_size]
        images = decode_mean(params, chunk, np.full(len(chunk), label, np.int32))
        correct += int(np.sum(classifier.predict(images) == label))
      per_class[f"conditional_accuracy_{label}"] = correct / len(z)
    return {"conditional_accuracy": float(np.mean(list(per_class.values())))} | per_class

  return conditional_accuracy


def make_task(config, workdir, mesh):
  """The CVAE as a loop.Task: the VAE family's conditional task with the classifier's scores added."""
  validate(config)
  task, schedule, model, data = vae.make_task(config, workdir, mesh)
  check_labels(data, config.dataset)
  classifier = load_classifier(config, data)
  accuracy = make_conditional_accuracy(model, config, classifier, data.num_classes)

  def evaluate(state, vae_evaluate=task.evaluate):
    return vae_evaluate(state) | accuracy(jax.device_get(state.params))

  return dataclasses.replace(task, evaluate=evaluate), schedule, model, data


def train_and_evaluate(config, workdir):
  """Trains a conditional VAE and writes the workdir; returns the final state."""
  mesh = parallel.make_mesh()
  task, schedule, _, _ = make_task(config, workdir, mesh)
  loop.check_resume_config(workdir, config_lib.as_flat_dict(config), config_lib.MAY_CHANGE_ON_RESUME)
  return loop.train(task, schedule, workdir, config.seed, mesh)
