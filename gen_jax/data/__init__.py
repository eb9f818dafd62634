"""Datasets as in-memory uint8 image arrays: `load_split(dataset, split) -> Split`.

Dataset names (`--dataset`): see `DATASET_HELP`. `fashion_mnist` and `mnist` go through the
project's own TFDS builders (`builders.py`, prepared once into the data dir, see `tfds_data.py` for
their manual dirs and the env vars GEN_JAX_FASHION_MNIST_MANUAL_DIR / GEN_JAX_MNIST_MANUAL_DIR);
other names go to the TFDS catalog; `npz:PATH` and `images:DIR` are the user's files (`user_data.py`).

A user's examples are put in one fixed random order (its test split too, when it has one); a source without
a test split (an npz file without `x_test`, any `images:DIR`) then keeps the first 90% of that order for
"train" and holds out the last 10% (at least one example) for "test", always the same examples.
"""

import dataclasses
import os

import numpy as np

from gen_jax.data import user_data
from gen_jax.errors import UserError

DATASET_HELP = ('fashion_mnist (offline), mnist, npz:PATH (key x, optional y / x_test / y_test), '
                'images:DIR (PNG/JPEG files, resized to --image_size, default 64) or a TFDS catalog '
                'name')
SPLITS = ('train', 'test')
DEFAULT_IMAGE_FOLDER_SIZE = 64
# Fraction of a source without a test split that is held out as its test split.
HOLDOUT_FRACTION = 0.1
# Seed of the fixed random order a user's training examples are put in (`_user_split`).
USER_DATA_ORDER_SEED = 20260


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in memory. The arrays are read-only: they are shared by every caller (memoised)."""

  images: np.ndarray  # (N, H, W, C) uint8 in [0, 255], C in {1, 3}
  labels: np.ndarray | None  # (N,) int32, or None when the dataset has no labels
  num_classes: int | None
  name: str  # e.g. "fashion_mnist/train"


# `--dataset` prefix -> loader(path, image_size) of a user's files, as {'train': (x, y), 'test': (x, y) or None}.
USER_DATA = {
    'npz:': lambda path, image_size: user_data.load_npz(path),
    'images:': lambda path, image_size: user_data.load_image_folder(path, image_size or DEFAULT_IMAGE_FOLDER_SIZE),
}


def user_data_prefix(dataset: str) -> str | None:
  """The `USER_DATA` prefix `dataset` starts with; None for a TFDS name."""
  return next((prefix for prefix in USER_DATA if dataset.startswith(prefix)), None)


# Whole splits loaded in this process, keyed by (dataset, split, data_dir, image_size).
_LOADED: dict[tuple, Split] = {}


def _in_fixed_order(images, labels):
  order = np.random.default_rng(USER_DATA_ORDER_SEED).permutation(len(images))
  return images[order], None if labels is None else labels[order]


def _user_split(train_and_test: dict, split: str, source: str):
  """`split` of a user's source. Its training examples are first put in a fixed random order (the same at
  every load), so that what is held out from their end (the test split: the last 10% when the source has
  none; a validation split) and what --num_train_examples keeps from their start are random subsets, not
  the last or first files of a folder (or rows of an array) sorted by class."""
  if train_and_test['test'] is not None:  # --num_test_examples keeps the start of a shuffled test split too.
    return _in_fixed_order(*train_and_test[split])
  images, labels = _in_fixed_order(*train_and_test['train'])
  num_test = max(1, int(round(len(images) * HOLDOUT_FRACTION)))
  if len(images) - num_test < 1:
    raise UserError(f'{source} holds {len(images)} example(s); allowed: at least 2, so that '
                    f'{HOLDOUT_FRACTION:.0%} can be held out for test')
  part = slice(None, -num_test) if split == 'train' else slice(-num_test, None)
  return images[part], None if labels is None else labels[part]


def _num_classes(train_and_test: dict) -> int | None:
  labels = [pair[1] for pair in train_and_test.values() if pair is not None]
  if not labels or labels[0] is None:
    return None
  return int(max(int(y.max()) for y in labels if y.size)) + 1


def _resize(images: np.ndarray, image_size: int, dataset: str) -> np.ndarray:
  if images.shape[1:3] == (image_size, image_size):
    return images
  if images.shape[1] != images.shape[2]:
    raise UserError(f'image_size {image_size} given for {dataset!r}, whose images are '
                    f'{images.shape[1]}x{images.shape[2]}; allowed: no image_size for non-square data')
  return user_data.resize_images(images, image_size)


def _load_whole_split(dataset: str, split: str, data_dir: str | None,
                      image_size: int | None) -> Split:
  name = f'{dataset}/{split}'
  prefix = user_data_prefix(dataset)
  if prefix is not None:
    train_and_test = USER_DATA[prefix](os.path.expanduser(dataset[len(prefix):]), image_size)
    images, labels = _user_split(train_and_test, split, dataset)
    num_classes = _num_classes(train_and_test)
  elif dataset and all(c.isalnum() or c in '_/:.' for c in dataset):
    # Imported here: TFDS costs ~0.3 s at start-up, which a run on toy or user data, or one refused before its
    # data loads, does not need.
    from gen_jax.data import tfds_data
    images, labels, num_classes = tfds_data.load_tfds_split(dataset, split, data_dir)
  else:
    raise UserError(f'unknown dataset {dataset!r}; allowed: {DATASET_HELP}')
  if image_size is not None:
    images = _resize(images, image_size, dataset)
  images.flags.writeable = False
  if labels is not None:
    labels.flags.writeable = False
  return Split(images=images, labels=labels, num_classes=num_classes, name=name)


def load_split(dataset: str, split: str, *, data_dir: str | None = None,
               image_size: int | None = None, num_examples: int | None = None) -> Split:
  """Loads one split of `dataset` into memory (memoised per process).

  Args:
    dataset: one of the forms in `DATASET_HELP`.
    split: 'train' or 'test'.
    data_dir: TFDS data dir; None means TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    image_size: side of the square images returned. Required in effect for images:DIR (None means
      64 there); elsewhere None keeps the native size and a value resizes (central square, bicubic).
    num_examples: keep only the first n examples of the split (None: all of them); more than the split holds
      is refused, as `--num_<split>_examples` (a run would otherwise train on fewer than it says).

  Returns:
    A `Split` with read-only arrays.

  Raises:
    UserError: for an unknown dataset or split, bad sizes, or data that cannot be used.
  """
  if split not in SPLITS:
    raise UserError(f'unknown split {split!r}; allowed: {", ".join(SPLITS)}')
  for flag, value in (('image_size', image_size), ('num_examples', num_examples)):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or value < 1):
      raise UserError(f'{flag} {value!r} is not allowed; allowed: a positive integer')
  key = (dataset, split, data_dir, image_size)
  if key not in _LOADED:
    _LOADED[key] = _load_whole_split(dataset, split, data_dir, image_size)
  whole = _LOADED[key]
  size = len(whole.images)
  if num_examples is not None and num_examples > size:
    raise UserError(f'--num_{split}_examples={num_examples} is more than the {size} examples of the {split} split '
                    f'of {dataset}; allowed: at most {size} (0: all of them)')
  if num_examples is None or num_examples == size:
    return whole
  return dataclasses.replace(
      whole, images=whole.images[:num_examples],
      labels=None if whole.labels is None else whole.labels[:num_examples])
