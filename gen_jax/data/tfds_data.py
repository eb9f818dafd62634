"""Loading TFDS datasets into memory: the project's MNIST-family builders and catalog names.

Decoding an ArrayRecord split through a TFDS data source costs ~2 s for the 60k Fashion-MNIST images
even in bulk, so the first read of a split also writes its decoded arrays next to the prepared files
(`<builder data_dir>/gen_jax-<split>.npz`, written atomically); later reads load that in ~0.1 s. When the
prepared directory is read-only the cache is skipped and every read decodes.

Manual dirs (where the IDX files are read from when a dataset is first prepared):
  fashion_mnist: `manual_dir=`, else env var GEN_JAX_FASHION_MNIST_MANUAL_DIR, else Debian's
    /usr/share/datasets/fashion-mnist (`apt-get install dataset-fashion-mnist`).
  mnist: `manual_dir=`, else env var GEN_JAX_MNIST_MANUAL_DIR; when neither holds the four IDX files,
    they are downloaded from `builders.MNIST_URL` (needs internet).
"""

import importlib.util
import os
import socket
import sys
import urllib.parse
import zipfile

import numpy as np
import tensorflow_datasets as tfds

# A first preparation takes seconds; its progress bars on stderr would bury the one line that a run refused
# after loading its data prints (the stderr contract of the README's bad-input section).
tfds.disable_progress_bar()

from gen_jax import files
from gen_jax.data import builders
from gen_jax.errors import UserError

MANUAL_DIR_ENV = {'fashion_mnist': 'GEN_JAX_FASHION_MNIST_MANUAL_DIR',
                  'mnist': 'GEN_JAX_MNIST_MANUAL_DIR'}
_BUILDERS = {'fashion_mnist': builders.GenJaxFashionMnist, 'mnist': builders.GenJaxMnist}
_DEFAULT_MANUAL_DIR = {'fashion_mnist': builders.FASHION_MNIST_MANUAL_DIR, 'mnist': None}


def _host_resolves(url: str) -> bool:
  """Whether the host of `url` has an address: offline, TFDS's download retries take minutes."""
  try:
    socket.getaddrinfo(urllib.parse.urlparse(url).hostname, 443)
  except OSError:
    return False
  return True


def prepare_idx_dataset(name: str, data_dir: str | None = None,
                        manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Returns the prepared builder of 'fashion_mnist' or 'mnist', preparing it on first use.

  Args:
    name: 'fashion_mnist' or 'mnist'.
    data_dir: TFDS data dir; None means TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    manual_dir: directory holding the four IDX .gz files; see the module docstring for the default.
  """
  return prepared_once(lambda: _BUILDERS[name](data_dir=data_dir),
                       lambda builder: _check_idx(builder, name, manual_dir),
                       lambda builder: _prepare_idx(builder, name, manual_dir))


def prepared_once(make_builder, check, prepare):
  """`make_builder()`, first prepared by `prepare(builder)` unless it is prepared already.

  `check(builder)` raises the UserError of a preparation that cannot work here (files missing, offline,
  no TensorFlow) before anything is written: a refused dataset leaves the data dir as it was, without the
  folder and lock below. Preparing holds a lock beside the dataset's folder, and the builder is made afresh
  once the lock is held: runs started together on a fresh machine prepare the data once, the others wait for
  it. TFDS itself does not guard this; the second of two such runs failed renaming its incomplete folder
  (FileExistsError).
  """
  builder = make_builder()
  if builder.is_prepared():
    return builder
  check(builder)
  with files.held_lock(os.path.join(os.path.dirname(builder.data_dir), '.gen_jax-prepare.lock')):
    builder = make_builder()
    if not builder.is_prepared():
      prepare(builder)
  return builder


def _idx_manual_dir(name, manual_dir):
  """The folder the IDX files are read from, and the names of those missing there."""
  manual_dir = manual_dir or os.environ.get(MANUAL_DIR_ENV[name]) or _DEFAULT_MANUAL_DIR[name]
  return manual_dir, builders.missing_idx_files(manual_dir)


def _check_idx(builder, name, manual_dir):
  manual_dir, missing = _idx_manual_dir(name, manual_dir)
  if missing and name == 'fashion_mnist':
    raise UserError(
        f'fashion_mnist is not prepared in {builder.data_dir} and its IDX files are missing from '
        f'{manual_dir} ({", ".join(missing)}); install them with `apt-get install '
        f'dataset-fashion-mnist`, set {MANUAL_DIR_ENV[name]} to a folder holding them, or pass '
        '--data_dir where it is prepared')
  if missing and not _host_resolves(builders.MNIST_URL):
    raise UserError(
        f'{name} is not prepared in {builder.data_dir}, {MANUAL_DIR_ENV[name]} does not point to '
        f'its four IDX .gz files, and {builders.MNIST_URL} cannot be reached (offline?); set '
        f'{MANUAL_DIR_ENV[name]} to a folder holding them, or pass --data_dir where it is prepared')


def _prepare_idx(builder, name, manual_dir):
  manual_dir, missing = _idx_manual_dir(name, manual_dir)
  config = tfds.download.DownloadConfig(manual_dir=None if missing else manual_dir)
  try:
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # Any failure here is the data's or the network's, not a bug of the caller.
    message = str(e).splitlines()[0] if str(e) else ''
    raise UserError(
        f'{name} could not be prepared in {builder.data_dir} ({type(e).__name__}: {message}); '
        f'without internet put the four IDX .gz files in a folder and set {MANUAL_DIR_ENV[name]} '
        'to it, or pass --data_dir where it is prepared') from None


def _catalog_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  return prepared_once(lambda: _make_catalog_builder(name, data_dir), lambda builder: _check_catalog(builder, name),
                       lambda builder: _prepare_catalog(builder, name))


def _make_catalog_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f'unknown dataset {name!r}; allowed: fashion_mnist, mnist, npz:PATH, images:DIR '
                    'or a TFDS catalog name') from None
  except Exception as e:  # E.g. a catalog module that needs TensorFlow to import.
    message = str(e).splitlines()[0] if str(e) else ''
    raise UserError(f'TFDS dataset {name!r} could not be loaded here ({type(e).__name__}: '
                    f'{message[:200]}); use fashion_mnist, mnist, npz:PATH or images:DIR') from None


def _check_catalog(builder, name):
  # TFDS encodes catalog images with TensorFlow; without it, fail now rather than after a download
  # (whose retries take minutes when offline).
  if importlib.util.find_spec('tensorflow') is None:
    raise UserError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir} and preparing it needs '
        'TensorFlow (not installed) and internet; prepare it elsewhere with `tfds build '
        '--file_format=array_record` and pass --data_dir, or use npz:PATH')


def _prepare_catalog(builder, name):
  try:
    builder.download_and_prepare(file_format='array_record')
  except Exception as e:  # Offline, most often.
    message = str(e).splitlines()[0] if str(e) else ''
    raise UserError(
        f'TFDS dataset {name!r} could not be prepared in {builder.data_dir} '
        f'({type(e).__name__}: {message[:200]}); it needs internet the first time, or pass '
        '--data_dir where it is prepared') from None


def _decode_split(builder, split: str) -> tuple[np.ndarray, np.ndarray | None, int | None]:
  """Decodes a whole split through TFDS's data source (bulk `__getitems__`, one call)."""
  image_key, label_key = builder.info.supervised_keys or ('image', None)
  try:
    source = builder.as_data_source(split)
    examples = source.__getitems__(list(range(len(source))))
  except Exception as e:  # E.g. an image feature whose decoding needs TensorFlow.
    raise UserError(f'TFDS dataset {builder.name!r} split {split!r} could not be read without '
                    f'TensorFlow ({type(e).__name__}); use npz:PATH instead') from None
  images = np.stack([np.asarray(example[image_key]) for example in examples])
  if images.ndim == 3:
    images = images[..., None]
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise UserError(f'TFDS dataset {builder.name!r} has images {images.shape} {images.dtype}; '
                    'allowed: uint8 (N,H,W,C) with C in {1,3}')
  if label_key is None:
    return images, None, None
  labels = np.array([example[label_key] for example in examples], dtype=np.int32)
  return images, labels, builder.info.features[label_key].num_classes


def read_split(builder, split: str) -> tuple[np.ndarray, np.ndarray | None, int | None]:
  """Returns (images (N,H,W,C) uint8, labels (N,) int32 or None, num_classes or None)."""
  if split not in builder.info.splits:
    raise UserError(f'TFDS dataset {builder.name!r} has no split {split!r}; '
                    f'it has: {", ".join(sorted(builder.info.splits))}')
  cache_path = os.path.join(os.fspath(builder.data_dir), f'gen_jax-{split}.npz')
  if os.path.exists(cache_path):
    try:
      with np.load(cache_path) as cached:
        labels = cached['labels'] if 'labels' in cached.files else None
        num_classes = int(cached['num_classes']) if 'num_classes' in cached.files else None
        return cached['images'], labels, num_classes
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
      # The cache is derived from the ArrayRecord files: a damaged one (cut short, say) is rebuilt.
      print(f'warning: the decoded cache {cache_path} is damaged ({type(error).__name__}); rebuilding it',
            file=sys.stderr, flush=True)
  images, labels, num_classes = _decode_split(builder, split)
  arrays = {'images': images}
  if labels is not None:
    arrays.update(labels=labels, num_classes=np.int64(num_classes))
  files.write_cache(cache_path, lambda f: np.savez(f, **arrays), mode="wb")  # Read-only data dir: decode again.
  return images, labels, num_classes


def load_tfds_split(name: str, split: str, data_dir: str | None = None,
                    manual_dir: str | None = None):
  """Loads `split` of 'fashion_mnist', 'mnist' (the project's builders) or a TFDS catalog name."""
  if name in _BUILDERS:
    builder = prepare_idx_dataset(name, data_dir, manual_dir)
  else:
    builder = _catalog_builder(name, data_dir)
  return read_split(builder, split)
