"""The project's own classifier per dataset: the feature space of the sample-quality metrics and the judge of
conditional samples.

There are no Inception weights for 28×28 grayscale data, so sample quality is measured in the feature space of
a classifier trained by the project on the same data (README, "Sample quality"), and the
conditional VAE's samples are labelled by it (`conditional_accuracy`).

  classifier = load_or_train_classifier("fashion_mnist")   # trains once (~10-40 s on 2 CPU cores), then loads
  classifier.predict(images01)    # (N,) int32 labels
  classifier.features(images01)   # (N, 256) float32, the penultimate layer
  classifier.test_accuracy        # recorded when it was trained

Decisions:
- An MLP 784-512-256-classes with ReLU on [0, 1] intensities, Adam 1e-3 decayed to 0 by a cosine, batch 128,
  `DEFAULT_NUM_EPOCHS` epochs, no augmentation or dropout: the classifier should describe the data as it is,
  and XLA's CPU convolutions are slow (JAX issue #12868) while an MLP reaches ~89% on Fashion-MNIST test in seconds.
  The features are the 256 ReLU outputs of the penultimate layer.
- The cache lives beside the data: `<data_dir or TFDS's default>/gen_jax_classifiers/<dataset>[-<variant>]/`
  holding `checkpoint/` (orbax, the parameters) and `info.json` (test accuracy, dataset, examples, epochs,
  seed, architecture). The variant names every setting that differs from the default (image size, number of
  train examples, epochs, seed), so a small classifier trained by a test never stands in for the default one.
- A classifier folder is written under a temporary name and renamed once complete, so a process never reads
  half a classifier; when two processes train the same one at once, the first rename wins and the other
  process uses that one.
- A cached classifier whose recorded architecture differs from the code's is retrained and replaced, never
  used with the wrong network.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from gen_jax import config as config_lib, optim
from gen_jax.data import image_data, load_split, preprocessing, user_data_prefix
from gen_jax.errors import UserError
from gen_jax.progress import Progress

HIDDEN_SIZES = (512, 256)
# Recorded in info.json and compared on load: a change here retrains cached classifiers.
ARCHITECTURE = {"kind": "mlp", "hidden_sizes": list(HIDDEN_SIZES), "activation": "relu",
                "input": "intensities in [0, 1]", "features": "penultimate layer (post-ReLU)"}
DEFAULT_NUM_EPOCHS = 5
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
# Images per jitted forward pass; the last chunk is padded so that one shape is ever compiled.
INFERENCE_BATCH_SIZE = 1000
CACHE_FOLDER = "gen_jax_classifiers"
INFO_FILE = "info.json"
CHECKPOINT_FOLDER = "checkpoint"

# Classifiers loaded in this process, keyed by (folder, info.json's modification time): evaluating every few
# thousand steps then neither restores nor recompiles, and a folder replaced on disk is loaded afresh.
_LOADED: dict[tuple[str, int], "Classifier"] = {}


class ClassifierMLP(nn.Module):
  """images (N, H, W, C) in [0, 1] -> (logits (N, classes), features (N, hidden_sizes[-1]))."""
  hidden_sizes: Sequence[int]
  num_classes: int

  @nn.compact
  def __call__(self, images01):
    h = images01.reshape(images01.shape[0], -1)
    for size in self.hidden_sizes:
      h = nn.relu(nn.Dense(size)(h))
    return nn.Dense(self.num_classes)(h), h


class Classifier:
  """A trained classifier; every method takes float images (N, H, W, C) in [0, 1] and returns numpy arrays."""

  def __init__(self, params, info: dict, checkpoint_dir: str):
    self.info = info
    self.num_classes = int(info["num_classes"])
    self.image_shape = tuple(info["image_shape"])
    self.test_accuracy = float(info["test_accuracy"])
    self.checkpoint_dir = checkpoint_dir  # The classifier's folder: checkpoint/ and info.json.
    self._params = params
    module = ClassifierMLP(HIDDEN_SIZES, self.num_classes)
    self._forward = jax.jit(lambda params, x: module.apply({"params": params}, x))

  def check_trained_on(self, dataset: str):
    """One line unless this classifier was trained on `dataset`: another dataset's with the same image shape
    and classes (MNIST's on Fashion-MNIST) would judge samples without complaint, and mean nothing."""
    if _dataset_slug(self.info["dataset"]) != _dataset_slug(dataset):  # A user's path however it is written.
      raise UserError(f"the classifier in {self.checkpoint_dir} was trained on {self.info['dataset']!r}; "
                      f"allowed: a classifier of {dataset!r}")

  def logits_and_features(self, images01) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, classes), features (N, F)), float32, computed in chunks of one compiled shape."""
    images01 = np.asarray(images01, np.float32)
    if images01.ndim != 4 or images01.shape[1:] != self.image_shape:
      raise UserError(f"images of shape {images01.shape} given to the {self.info['dataset']} classifier; "
                      f"allowed: (N, {', '.join(map(str, self.image_shape))}) in [0, 1]")
    logits, features = [], []
    for start, stop in image_data.evaluation_chunks(len(images01), INFERENCE_BATCH_SIZE):
      chunk, _ = image_data.padded_chunk(images01, start, stop, INFERENCE_BATCH_SIZE)
      chunk_logits, chunk_features = jax.device_get(self._forward(self._params, chunk))
      logits.append(chunk_logits[:stop - start])
      features.append(chunk_features[:stop - start])
    if not logits:
      return (np.zeros((0, self.num_classes), np.float32), np.zeros((0, HIDDEN_SIZES[-1]), np.float32))
    return np.concatenate(logits), np.concatenate(features)

  def logits(self, images01) -> np.ndarray:
    return self.logits_and_features(images01)[0]

  def features(self, images01) -> np.ndarray:
    """The penultimate layer's activations, (N, 256) float32: the space of fcd, precision and recall."""
    return self.logits_and_features(images01)[1]

  def predict(self, images01) -> np.ndarray:
    """The most likely label of each image, (N,) int32."""
    return np.argmax(self.logits(images01), axis=-1).astype(np.int32)


# --- Training ---------------------------------------------------------------------------------------------


def _train_epoch(state, images, labels, key, steps, batch_size):
  """One epoch in one dispatch: a fresh permutation (the remainder dropped), then `steps` Adam steps."""
  order = jax.random.permutation(key, images.shape[0])[:steps * batch_size].reshape(steps, batch_size)

  def step(state, indices):
    x = preprocessing.to_unit_interval(images[indices])

    def loss_fn(params):
      logits, _ = state.apply_fn({"params": params}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels[indices]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  state, losses = jax.lax.scan(step, state, order)
  return state, losses.mean()


def train_parameters(images_uint8: np.ndarray, labels: np.ndarray, num_classes: int, *, num_epochs: int,
                     seed: int):
  """Trains a `ClassifierMLP` on uint8 images and integer labels; returns its parameters."""
  batch_size = min(BATCH_SIZE, len(images_uint8))
  steps = len(images_uint8) // batch_size
  module = ClassifierMLP(HIDDEN_SIZES, num_classes)
  init_key, data_key = jax.random.split(jax.random.key(seed))
  params = module.init(init_key, jnp.zeros((1, *images_uint8.shape[1:]), jnp.float32))["params"]
  # The project's optimizer factory, so the classifier's Adam is configured like every family's.
  optimizer = optim.make_optimizer(
      config_lib.TrainingConfig(optimizer="adam", learning_rate=LEARNING_RATE, lr_schedule="cosine"),
      total_steps=steps * num_epochs)
  state = train_state.TrainState.create(apply_fn=module.apply, params=params, tx=optimizer)
  train_epoch = jax.jit(_train_epoch, static_argnames=("steps", "batch_size"), donate_argnums=0)
  images, labels = jnp.asarray(images_uint8), jnp.asarray(labels, jnp.int32)
  progress = Progress("classifier training, epochs", num_epochs)
  for epoch in range(num_epochs):
    state, loss = train_epoch(state, images, labels, jax.random.fold_in(data_key, epoch), steps=steps,
                              batch_size=batch_size)
    logging.info("classifier epoch %d/%d: train cross-entropy %.4f", epoch + 1, num_epochs, float(loss))
    progress.update(epoch + 1)
  return jax.device_get(state.params)


# --- The cache ----------------------------------------------------------------------------------------------


def _check_count(name, value):
  if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
    raise UserError(f"{name} {value!r} is not allowed; allowed: a positive integer (or None for the default)")


def _dataset_slug(dataset: str) -> str:
  """A folder name for `dataset`; a user's file or folder also gets a hash of its absolute path."""
  prefix = user_data_prefix(dataset)
  if prefix is None:
    return re.sub(r"[^A-Za-z0-9_.]", "_", dataset)
  path = os.path.abspath(os.path.expanduser(dataset[len(prefix):]))
  stem = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0]
  digest = hashlib.sha256(path.encode()).hexdigest()[:8]
  return re.sub(r"[^A-Za-z0-9_.]", "_", f"{prefix[:-1]}_{stem}") + f"_{digest}"


def cache_directory(dataset: str, data_dir: Optional[str] = None, image_size: Optional[int] = None, *,
                    num_train_examples: Optional[int] = None, num_epochs: Optional[int] = None,
                    seed: int = 0, cache_dir: Optional[str] = None) -> str:
  """The folder of the classifier these settings describe (see the module docstring for the layout)."""
  # TFDS and orbax are imported where they are used: a run that imports this module (every GAN's) may never
  # need either, and together they cost ~0.4 s at start-up.
  from tensorflow_datasets.core import constants as tfds_constants
  root = cache_dir or os.path.join(data_dir or tfds_constants.get_default_data_dir(), CACHE_FOLDER)
  variant = []
  if image_size is not None:
    variant.append(f"size{image_size}")
  if num_train_examples is not None:
    variant.append(f"n{num_train_examples}")
  if num_epochs is not None and num_epochs != DEFAULT_NUM_EPOCHS:
    variant.append(f"e{num_epochs}")
  if seed != 0:
    variant.append(f"seed{seed}")
  return os.path.abspath(os.path.expanduser(os.path.join(root, "-".join([_dataset_slug(dataset)] + variant))))


def _read_info(directory: str) -> Optional[dict]:
  try:
    with open(os.path.join(directory, INFO_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def load_classifier(directory: str) -> Classifier:
  """The classifier saved in `directory` (a folder written by `load_or_train_classifier`)."""
  directory = os.path.abspath(os.path.expanduser(directory))
  try:
    memo_key = (directory, os.stat(os.path.join(directory, INFO_FILE)).st_mtime_ns)
  except OSError:
    memo_key = None
  if memo_key in _LOADED:
    return _LOADED[memo_key]
  info = _read_info(directory)
  if info is None or not os.path.isdir(os.path.join(directory, CHECKPOINT_FOLDER)):
    raise UserError(f"{directory} holds no classifier; allowed: a folder with {INFO_FILE} and "
                    f"{CHECKPOINT_FOLDER}/ written by load_or_train_classifier (experiments.classifier)")
  if info.get("architecture") != ARCHITECTURE:
    raise UserError(f"the classifier in {directory} has architecture {info.get('architecture')}, this code "
                    f"builds {ARCHITECTURE}; allowed: a classifier trained by this version (delete the folder "
                    "to retrain it)")
  module = ClassifierMLP(HIDDEN_SIZES, int(info["num_classes"]))
  abstract = jax.eval_shape(module.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, *info["image_shape"]), jnp.float32))["params"]
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(os.path.join(directory, CHECKPOINT_FOLDER), abstract)
  _LOADED[memo_key] = Classifier(params, info, directory)
  return _LOADED[memo_key]


def is_current(directory: str) -> bool:
  """Whether `directory` holds a complete classifier of today's architecture (else it is trained again)."""
  info = _read_info(directory)
  return (info is not None and info.get("architecture") == ARCHITECTURE
          and os.path.isdir(os.path.join(directory, CHECKPOINT_FOLDER)))


def _remove(directory: str) -> None:
  """Renames a cached classifier folder out of the way, then deletes it (a reader never sees half of it)."""
  stale = tempfile.mkdtemp(dir=os.path.dirname(directory), prefix=f".{os.path.basename(directory)}.stale-")
  os.rename(directory, os.path.join(stale, "old"))
  shutil.rmtree(stale, ignore_errors=True)


def _publish(directory: str, params, info: dict) -> None:
  """Writes the classifier under a temporary name and renames it into place (see the module docstring)."""
  root = os.path.dirname(directory)
  os.makedirs(root, exist_ok=True)
  staging = tempfile.mkdtemp(dir=root, prefix=f".{os.path.basename(directory)}.tmp-")
  try:
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the classifier from others sharing the data dir.
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(staging, CHECKPOINT_FOLDER), params)
      checkpointer.wait_until_finished()
    with open(os.path.join(staging, INFO_FILE), "w") as f:
      json.dump(info, f, indent=2)
    if os.path.exists(directory) and not is_current(directory):  # Stale: another architecture, or torn.
      _remove(directory)
    try:
      os.rename(staging, directory)
    except OSError:  # Another process published the same classifier first: use theirs.
      if not is_current(directory):
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def load_or_train_classifier(dataset: str, data_dir: Optional[str] = None, image_size: Optional[int] = None,
                             *, num_train_examples: Optional[int] = None, num_epochs: Optional[int] = None,
                             seed: int = 0, cache_dir: Optional[str] = None) -> Classifier:
  """The classifier of `dataset`, loaded from its cache, or trained, tested and cached on first use.

  Args:
    dataset: a labelled dataset name as `gen_jax.data.load_split` takes it.
    data_dir: TFDS data dir (None: TFDS's default); the cache lives in its `gen_jax_classifiers/`.
    image_size: the side the images are resized to (None: the dataset's own).
    num_train_examples: train on the first N training examples only (None: all); a non-default value
      gets its own cache folder.
    num_epochs: training epochs (None: `DEFAULT_NUM_EPOCHS`).
    seed: initialisation and data order.
    cache_dir: where classifier folders live instead of `<data_dir>/gen_jax_classifiers` (tests).

  Raises:
    UserError: bad settings, an unknown or unlabelled dataset.
  """
  for name, value in (("image_size", image_size), ("num_train_examples", num_train_examples),
                      ("num_epochs", num_epochs)):
    _check_count(name, value)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise UserError(f"seed {seed!r} is not allowed; allowed: an integer")
  directory = cache_directory(dataset, data_dir, image_size, num_train_examples=num_train_examples,
                              num_epochs=num_epochs, seed=seed, cache_dir=cache_dir)
  if is_current(directory):
    try:
      return load_classifier(directory)
    except Exception as error:  # Damaged on disk (orbax raises many types); the cache is derived: rebuilt.
      first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
      print(f"warning: the classifier cache {directory} cannot be read ({first_line}); training it again",
            flush=True)
      _remove(directory)
  num_epochs = num_epochs or DEFAULT_NUM_EPOCHS
  train = load_split(dataset, "train", data_dir=data_dir, image_size=image_size,
                     num_examples=num_train_examples)
  test = load_split(dataset, "test", data_dir=data_dir, image_size=image_size)
  if train.labels is None or test.labels is None:
    raise UserError(f"dataset {dataset!r} has no labels, so no classifier can be trained on it; allowed: a "
                    "labelled dataset (fashion_mnist, mnist, a TFDS name with labels, npz:PATH with y)")
  started = time.time()
  params = train_parameters(train.images, train.labels, train.num_classes, num_epochs=num_epochs, seed=seed)
  train_seconds = time.time() - started
  info = {
      "dataset": dataset, "image_size": image_size, "image_shape": list(train.images.shape[1:]),
      "num_classes": int(train.num_classes), "num_train_examples": len(train.images),
      "num_test_examples": len(test.images), "num_epochs": num_epochs, "seed": int(seed),
      "batch_size": min(BATCH_SIZE, len(train.images)), "learning_rate": LEARNING_RATE,
      "lr_schedule": "cosine", "optimizer": "adam", "architecture": ARCHITECTURE,
      "train_seconds": round(train_seconds, 2), "test_accuracy": float("nan"),  # Measured just below.
  }
  classifier = Classifier(params, info, directory)
  predictions = classifier.predict(preprocessing.to_unit_interval(test.images))
  info["test_accuracy"] = float(np.mean(predictions == test.labels))
  _publish(directory, params, info)
  return load_classifier(directory)


def conditional_accuracy(predicted, intended, num_classes: int) -> dict:
  """{'conditional_accuracy': the mean over classes of the share of samples drawn for class y that the
  classifier labels y, 'conditional_accuracy_<y>': each class's share}, from the classifier's `predicted`
  labels of samples drawn for the `intended` ones."""
  predicted, intended = np.asarray(predicted), np.asarray(intended)
  per_class = {f"conditional_accuracy_{label}": float(np.mean(predicted[intended == label] == label))
               for label in range(num_classes)}
  return {"conditional_accuracy": float(np.mean(list(per_class.values())))} | per_class
