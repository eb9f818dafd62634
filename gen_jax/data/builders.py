"""TFDS builders of the project's own for the MNIST family, read from IDX files.

TFDS's catalog `fashion_mnist` rejects the IDX files that Debian ships (Debian re-compressed them, so the
checksums differ) and its image feature needs TensorFlow to encode, so these builders store raw uint8
tensors in ArrayRecord files, which TFDS writes and reads without TensorFlow.

Both builders take the IDX files from `DownloadConfig(manual_dir=...)` when that directory holds them.
Only `GenJaxMnist` can also download them (from `MNIST_URL`) through the TFDS download manager.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data import idx

# IDX file names shared by MNIST and Fashion-MNIST, per split.
IDX_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
FASHION_MNIST_MANUAL_DIR = '/usr/share/datasets/fashion-mnist'
# The mirror that TFDS's own mnist builder downloads from.
MNIST_URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
_ALL_IDX_FILES = [name for pair in IDX_FILES.values() for name in pair]


def missing_idx_files(manual_dir) -> list[str]:
  """Names of the four IDX files that `manual_dir` lacks (all of them if it does not exist)."""
  if not manual_dir or not os.path.isdir(manual_dir):
    return list(_ALL_IDX_FILES)
  return [name for name in _ALL_IDX_FILES if not os.path.isfile(os.path.join(manual_dir, name))]


def _generate_examples(images_path, labels_path):
  images, labels = idx.read_idx(images_path), idx.read_idx(labels_path)
  if images.ndim != 3 or labels.shape != images.shape[:1]:
    raise ValueError(f'IDX files {images_path} {images.shape} and {labels_path} '
                     f'{labels.shape} do not hold images with one label each')
  for i, (image, label) in enumerate(zip(images, labels)):
    yield i, {'image': image[..., None], 'label': int(label)}


class _IdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared body: 28x28x1 uint8 images with a 10-way label, from the four IDX files."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and '
      't10k-labels-idx1-ubyte.gz in the manual dir.')
  _DESCRIPTION = ''

  def __init__(self, **kwargs):
    # TFDS's default would be array_record anyway without TensorFlow; say so to be independent of it.
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self):
    return self.dataset_info_from_configs(
        description=self._DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        # Keep the IDX order, so that the first n examples are the usual first n and match the files.
        disable_shuffling=True,
    )

  def _idx_paths(self, dl_manager) -> dict:
    """Maps each IDX file name to its path; the manual dir's files when it has all four."""
    # `dl_manager.manual_dir` asserts the directory exists and is non-empty; check for the files first.
    manual_dir = getattr(dl_manager, '_manual_dir', None)
    if manual_dir is not None and not missing_idx_files(manual_dir):
      return {name: os.path.join(dl_manager.manual_dir, name) for name in _ALL_IDX_FILES}
    return self._download_idx(dl_manager)

  def _download_idx(self, dl_manager) -> dict:
    raise FileNotFoundError(f'{self.name} needs the IDX files {", ".join(_ALL_IDX_FILES)} '
                            f'in the manual dir (DownloadConfig(manual_dir=...))')

  def _split_generators(self, dl_manager):
    paths = self._idx_paths(dl_manager)
    return {split: _generate_examples(paths[images], paths[labels])
            for split, (images, labels) in IDX_FILES.items()}

  def _generate_examples(self):  # Unused: `_split_generators` returns generators directly.
    raise NotImplementedError


class GenJaxFashionMnist(_IdxBuilder):
  """Fashion-MNIST (Xiao et al. 2017) from local IDX files, e.g. Debian's `dataset-fashion-mnist`."""

  _DESCRIPTION = 'Fashion-MNIST from local IDX files (no download).'


class GenJaxMnist(_IdxBuilder):
  """MNIST from local IDX files in the manual dir, or downloaded from `MNIST_URL`."""

  _DESCRIPTION = 'MNIST from IDX files, downloaded or in the manual dir.'

  def _download_idx(self, dl_manager) -> dict:
    return dl_manager.download({name: MNIST_URL + name for name in _ALL_IDX_FILES})
