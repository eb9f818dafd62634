"""Tests of gen_jax.data: dataset loading, user data validation and pixel preprocessing.

Note: preparing the full Fashion-MNIST from Debian's IDX files takes ~7 s, so it happens once per test
session (the module-scoped `fashion_data_dir` fixture); those tests skip when the files are not
installed (`apt-get install dataset-fashion-mnist`). Everything else uses tiny files in tmp_path.
"""

import concurrent.futures
import gzip
import os
import threading
import time

import jax
import numpy as np
import pytest
from PIL import Image

import gen_jax.data as data
from gen_jax.data import builders
from gen_jax.data import idx
from gen_jax.data import preprocessing
from gen_jax.data import tfds_data

from conftest import assert_user_error

FASHION_DIR = builders.FASHION_MNIST_MANUAL_DIR
needs_fashion_files = pytest.mark.skipif(
    bool(builders.missing_idx_files(FASHION_DIR)), reason='dataset-fashion-mnist not installed')


@pytest.fixture(scope='module')
def fashion_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  data.load_split('fashion_mnist', 'train', data_dir=data_dir)
  return data_dir


# --- Fashion-MNIST and MNIST through the project's TFDS builders -----------------------------------


@needs_fashion_files
def test_fashion_mnist_matches_idx_files(fashion_data_dir):
  train = data.load_split('fashion_mnist', 'train', data_dir=fashion_data_dir)
  test = data.load_split('fashion_mnist', 'test', data_dir=fashion_data_dir)
  assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
  assert test.images.shape == (10000, 28, 28, 1)
  assert train.labels.dtype == np.int32 and train.labels.shape == (60000,)
  assert train.num_classes == 10 and set(np.unique(train.labels)) == set(range(10))
  assert train.name == 'fashion_mnist/train' and test.name == 'fashion_mnist/test'
  idx_images = idx.read_idx(os.path.join(FASHION_DIR, 'train-images-idx3-ubyte.gz'))
  idx_labels = idx.read_idx(os.path.join(FASHION_DIR, 'train-labels-idx1-ubyte.gz'))
  for row in (0, 1, 12345, 59999):
    np.testing.assert_array_equal(train.images[row, ..., 0], idx_images[row])
  np.testing.assert_array_equal(train.labels, idx_labels)
  test_images = idx.read_idx(os.path.join(FASHION_DIR, 't10k-images-idx3-ubyte.gz'))
  np.testing.assert_array_equal(test.images[[0, 9999], ..., 0], test_images[[0, 9999]])


@needs_fashion_files
def test_fashion_mnist_is_prepared_once(fashion_data_dir, monkeypatch):
  builder = builders.GenJaxFashionMnist(data_dir=fashion_data_dir)
  files = sorted(os.listdir(builder.data_dir))
  mtimes = [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files]

  def fail(*args, **kwargs):
    raise AssertionError('re-prepared')
  monkeypatch.setattr(builders.GenJaxFashionMnist, '_split_generators', fail)
  # Bypass the in-process memo: this reads from the data dir again.
  images, labels, num_classes = tfds_data.load_tfds_split('fashion_mnist', 'train', fashion_data_dir)
  assert images.shape == (60000, 28, 28, 1) and num_classes == 10
  assert sorted(os.listdir(builder.data_dir)) == files
  assert [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files] == mtimes


@needs_fashion_files
def test_a_damaged_decoded_cache_is_rebuilt_with_a_warning(fashion_data_dir, capsys):
  images, labels, _ = tfds_data.load_tfds_split('fashion_mnist', 'test', fashion_data_dir)
  builder = builders.GenJaxFashionMnist(data_dir=fashion_data_dir)
  cache = os.path.join(builder.data_dir, 'gen_jax-test.npz')
  with open(cache, 'rb') as f:
    whole = f.read()
  with open(cache, 'wb') as f:  # Cut short, as by a kill or a full disk in the middle of the write.
    f.write(whole[:len(whole) // 3])
  again, again_labels, _ = tfds_data.load_tfds_split('fashion_mnist', 'test', fashion_data_dir)
  assert 'gen_jax-test.npz is damaged' in capsys.readouterr().err
  np.testing.assert_array_equal(again, images)
  np.testing.assert_array_equal(again_labels, labels)
  assert os.path.getsize(cache) == len(whole)  # Rebuilt whole.


def test_runs_started_together_prepare_a_dataset_once(tmp_path):
  """Two threads ask for one unprepared dataset at once: one prepares it while the other waits for the lock,
  then finds it prepared (without the lock both would prepare, as two runs on a fresh machine did)."""
  marker = tmp_path / 'dataset' / '1.0.0' / 'dataset_info.json'
  preparations, started = [], threading.Barrier(2)

  class Builder:  # What `prepared_once` uses of a TFDS builder.
    data_dir = str(marker.parent)

    def is_prepared(self):
      return marker.exists()

  def prepare(builder):
    preparations.append(builder)
    time.sleep(0.2)  # Long enough for the other thread to reach the lock.
    marker.parent.mkdir(parents=True)
    marker.write_text('{}')

  def ask():
    started.wait()
    return tfds_data.prepared_once(Builder, lambda builder: None, prepare)

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    builders_returned = list(pool.map(lambda _: ask(), range(2)))
  assert len(preparations) == 1
  assert all(builder.is_prepared() for builder in builders_returned)


@needs_fashion_files
def test_num_examples_keeps_the_first(fashion_data_dir):
  whole = data.load_split('fashion_mnist', 'train', data_dir=fashion_data_dir)
  part = data.load_split('fashion_mnist', 'train', data_dir=fashion_data_dir, num_examples=100)
  assert part.images.shape == (100, 28, 28, 1) and part.labels.shape == (100,)
  np.testing.assert_array_equal(part.images, whole.images[:100])
  assert data.load_split('fashion_mnist', 'train', data_dir=fashion_data_dir) is whole  # Memoised.
  assert not whole.images.flags.writeable


def test_fashion_mnist_without_files_or_prepared_data(tmp_path, monkeypatch):
  empty = tmp_path / 'manual'
  empty.mkdir()
  monkeypatch.setenv('GEN_JAX_FASHION_MNIST_MANUAL_DIR', str(empty))
  assert_user_error(
      lambda: data.load_split('fashion_mnist', 'train', data_dir=str(tmp_path / 'tfds')),
      'fashion_mnist', str(empty), 'apt-get install dataset-fashion-mnist', '--data_dir')
  assert_data_dir_untouched(tmp_path / 'tfds')


def assert_data_dir_untouched(data_dir):
  """A refused dataset writes nothing in the data dir: no dataset folder, no preparation lock."""
  assert not data_dir.exists() or not list(data_dir.iterdir()), sorted(map(str, data_dir.rglob('*')))


def write_tiny_mnist(directory, rng):
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for split, count in (('train', 20), ('test', 10)):
    images_name, labels_name = builders.IDX_FILES[split]
    arrays[split] = (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
                     rng.integers(0, 10, (count,), dtype=np.uint8))
    idx.write_idx(directory / images_name, arrays[split][0])
    idx.write_idx(directory / labels_name, arrays[split][1])
  return arrays


def test_idx_round_trip(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  idx.write_idx(tmp_path / 'a.gz', array)
  with gzip.open(tmp_path / 'a.gz', 'rb') as f:
    assert f.read(4) == bytes([0, 0, 8, 3])
  np.testing.assert_array_equal(idx.read_idx(tmp_path / 'a.gz'), array)


def test_mnist_prepared_offline_from_manual_dir(tmp_path, monkeypatch):
  arrays = write_tiny_mnist(tmp_path / 'manual', np.random.default_rng(0))
  monkeypatch.setenv('GEN_JAX_MNIST_MANUAL_DIR', str(tmp_path / 'manual'))
  data_dir = str(tmp_path / 'tfds')
  for split, count in (('train', 20), ('test', 10)):
    loaded = data.load_split('mnist', split, data_dir=data_dir)
    assert loaded.images.shape == (count, 28, 28, 1) and loaded.num_classes == 10
    np.testing.assert_array_equal(loaded.images[..., 0], arrays[split][0])
    np.testing.assert_array_equal(loaded.labels, arrays[split][1])
  assert data.load_split('mnist', 'train', data_dir=data_dir, num_examples=5).images.shape[0] == 5


def test_mnist_offline_without_manual_dir(tmp_path, monkeypatch):
  monkeypatch.delenv('GEN_JAX_MNIST_MANUAL_DIR', raising=False)
  monkeypatch.setattr(tfds_data, '_host_resolves', lambda url: False)
  assert_user_error(lambda: data.load_split('mnist', 'train', data_dir=str(tmp_path)),
                    'mnist', 'GEN_JAX_MNIST_MANUAL_DIR')
  assert_data_dir_untouched(tmp_path)


def test_unknown_dataset_and_split(tmp_path):
  assert_user_error(lambda: data.load_split('foo', 'train', data_dir=str(tmp_path)),
                    "unknown dataset 'foo'", 'npz:PATH', 'images:DIR')
  assert_user_error(lambda: data.load_split('no such!', 'train'), "'no such!'", 'fashion_mnist')
  assert_user_error(lambda: data.load_split('fashion_mnist', 'valid'), "'valid'", 'train, test')
  assert_user_error(lambda: data.load_split('fashion_mnist', 'train', num_examples=0),
                    'num_examples 0', 'positive integer')
  assert_user_error(lambda: data.load_split('images:x', 'train', image_size=-3), 'image_size -3')


def test_catalog_dataset_that_cannot_be_prepared_here(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  try:
    import tensorflow  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    pytest.skip('TensorFlow installed: preparing would try to download')
  except ImportError:
    pass
  assert_user_error(lambda: data.load_split('cifar10', 'train', data_dir=str(tmp_path)),
                    "'cifar10'", 'TensorFlow', '--data_dir')
  assert_data_dir_untouched(tmp_path)


# --- npz:PATH -----------------------------------------------------------------------------------


def save_npz(tmp_path, **arrays):
  path = tmp_path / 'data.npz'
  np.savez(path, **arrays)
  return f'npz:{path}'


def _rows(images):
  """The examples of `images` as a sorted list of bytes: the same multiset whatever their order."""
  return sorted(image.tobytes() for image in images)


def test_npz_uint8_with_labels_holds_out_a_fixed_random_tenth(tmp_path):
  """Sorted by class, as arrays often are: the held-out tenth is still a mix of classes, every example is in
  exactly one split with its own label, and a second load (another process) gives the same splits."""
  x = np.random.default_rng(0).integers(0, 256, (50, 8, 8), dtype=np.uint8)
  y = np.repeat(np.arange(5), 10)
  x[:, 0, 0] = np.arange(50)  # Each example's index, to find its label again.
  dataset = save_npz(tmp_path, x=x, y=y)
  train, test = data.load_split(dataset, 'train'), data.load_split(dataset, 'test')
  assert train.images.shape == (45, 8, 8, 1) and test.images.shape == (5, 8, 8, 1)
  assert _rows(np.concatenate([train.images, test.images])[..., 0]) == _rows(x)
  for split in (train, test):
    np.testing.assert_array_equal(split.labels, y[split.images[:, 0, 0, 0]])
  assert len(set(test.labels.tolist())) > 1
  assert train.labels.dtype == np.int32 and train.num_classes == test.num_classes == 5
  data._LOADED.clear()
  np.testing.assert_array_equal(data.load_split(dataset, 'test').images, test.images)


def test_npz_float_rgb_without_labels(tmp_path):
  x = np.random.default_rng(1).random((10, 4, 4, 3)).astype(np.float32)
  x[0, 0, 0] = [0.0, 1.0, 0.5]
  dataset = save_npz(tmp_path, x=x)
  split, test = data.load_split(dataset, 'train'), data.load_split(dataset, 'test')
  assert split.images.shape == (9, 4, 4, 3) and split.images.dtype == np.uint8
  assert split.labels is None and split.num_classes is None
  loaded = np.concatenate([split.images, test.images])
  assert _rows(loaded) == _rows(np.round(x * 255).astype(np.uint8))
  assert sum(list(image[0, 0]) == [0, 255, 128] for image in loaded) == 1  # 0.5 rounds to 128.


def test_npz_with_test_arrays(tmp_path):
  rng = np.random.default_rng(2)
  x, x_test = (rng.integers(0, 256, (n, 5, 5, 1), dtype=np.uint8) for n in (7, 3))
  dataset = save_npz(tmp_path, x=x, y=np.zeros(7, np.int64), x_test=x_test,
                     y_test=np.full(3, 5, np.int16))
  train, test = data.load_split(dataset, 'train'), data.load_split(dataset, 'test')
  assert _rows(train.images) == _rows(x) and _rows(test.images) == _rows(x_test)  # Each in a fixed order.
  assert train.num_classes == 6 and list(test.labels) == [5, 5, 5]
  assert data.load_split(dataset, 'train', num_examples=2).images.shape[0] == 2
  assert data.load_split(dataset, 'test', num_examples=3).images.shape[0] == 3  # All of the split: allowed.
  # More than a split holds was silently all of it: a run would train or test on fewer than its flags say.
  assert_user_error(lambda: data.load_split(dataset, 'train', num_examples=8), '--num_train_examples=8',
                    'the 7 examples of the train split', 'at most 7')
  assert_user_error(lambda: data.load_split(dataset, 'test', num_examples=4), '--num_test_examples=4', 'at most 3')


@pytest.mark.parametrize('arrays, fragments', [
    (dict(x=np.zeros((4, 8), np.uint8)), ["'x'", '(4, 8)', '(N,H,W)']),
    (dict(x=np.zeros((4, 8, 8, 2), np.uint8)), ["'x'", '(4, 8, 8, 2)', 'C in {1,3}']),
    (dict(x=np.full((4, 8, 8), 1.5)), ["'x'", '1.5', '[0, 1]']),
    (dict(x=np.full((4, 8, 8), np.nan)), ["'x'", 'nan', '[0, 1]']),
    (dict(x=np.full((4, 8, 8), 'a')), ["'x'", '<U1', 'uint8']),
    (dict(x=np.zeros((4, 8, 8), np.int64)), ["'x'", 'int64', 'uint8']),
    (dict(y=np.zeros(4, np.int64)), ["no key 'x'", 'keys: y']),
    (dict(x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(3, np.int64)), ["'y'", '(3,)', '(4,)']),
    (dict(x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4)), ["'y'", 'float64', 'integer']),
    (dict(x=np.zeros((4, 8, 8), np.uint8), y=-np.ones(4, np.int64)), ["'y'", '-1', '>= 0']),
    (dict(x=np.zeros((4, 8, 8), np.uint8), x_test=np.zeros((2, 9, 9), np.uint8)),
     ["'x_test'", '(9, 9, 1)']),
    (dict(x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4, np.int64),
          x_test=np.zeros((2, 8, 8), np.uint8)), ["'y_test'", 'both']),
])
def test_npz_bad_contents(tmp_path, arrays, fragments):
  dataset = save_npz(tmp_path, **arrays)
  assert_user_error(lambda: data.load_split(dataset, 'train'), dataset[4:], *fragments)


def test_npz_missing_or_unreadable_file(tmp_path):
  missing = tmp_path / 'nope.npz'
  assert_user_error(lambda: data.load_split(f'npz:{missing}', 'train'), str(missing), 'does not exist')
  garbage = tmp_path / 'garbage.npz'
  garbage.write_bytes(b'not an npz file')
  assert_user_error(lambda: data.load_split(f'npz:{garbage}', 'train'), str(garbage), 'npz')


# --- images:DIR ---------------------------------------------------------------------------------


def test_image_folder_rgb_resized_and_held_out(tmp_path):
  rng = np.random.default_rng(3)
  (tmp_path / 'sub').mkdir()
  for i in range(10):
    pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    folder = tmp_path / 'sub' if i % 2 else tmp_path
    Image.fromarray(pixels).save(folder / f'{i:02d}.png')
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / 'gray.jpg')  # Forces RGB for all.
  Image.fromarray(np.full((12, 16, 3), (10, 200, 30), np.uint8)).save(tmp_path / 'constant.png')
  (tmp_path / 'notes.txt').write_text('ignored')
  dataset = f'images:{tmp_path}'
  train = data.load_split(dataset, 'train', image_size=6)
  test = data.load_split(dataset, 'test', image_size=6)
  assert train.images.shape == (11, 6, 6, 3) and test.images.shape == (1, 6, 6, 3)
  # Values survive the conversion and the resize: the grayscale file as black in all three channels, the
  # constant colour as itself.
  every = np.concatenate([train.images, test.images]).reshape(12, -1, 3)
  assert sum(bool(np.all(image == 0)) for image in every) == 1
  assert sum(bool(np.all(image == (10, 200, 30))) for image in every) == 1
  assert train.labels is None and train.num_classes is None
  assert data.load_split(dataset, 'train').images.shape == (11, 64, 64, 3)  # Default size.


def test_image_folder_grayscale_stays_one_channel_and_sixteen_bits_become_eight(tmp_path):
  for i in range(3):
    Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(tmp_path / f'{i}.png')
  # A 16-bit PNG (PIL reads it as 'I;16'): 0..65535 scaled to 0..255, not clipped to white above 255.
  Image.fromarray(np.asarray([[0, 257 * 100], [65535, 257 * 40 + 100]], np.uint16)).save(tmp_path / 'deep.png')
  train = data.load_split(f'images:{tmp_path}', 'train', image_size=2)
  test = data.load_split(f'images:{tmp_path}', 'test', image_size=2)
  assert train.images.shape == (3, 2, 2, 1) and test.images.shape == (1, 2, 2, 1)
  images = {int(image.max()): image[..., 0] for image in np.concatenate([train.images, test.images])}
  assert sorted(images) == [0, 40, 80, 255]  # Pixels intact, each image once.
  np.testing.assert_array_equal(images[255], [[0, 100], [255, 40]])


def test_image_folder_empty_or_missing(tmp_path):
  assert_user_error(lambda: data.load_split(f'images:{tmp_path}', 'train'), str(tmp_path), 'no PNG')
  missing = tmp_path / 'nope'
  assert_user_error(lambda: data.load_split(f'images:{missing}', 'train'), str(missing),
                    'does not exist')


# --- preprocessing ------------------------------------------------------------------------------


def test_to_unit_interval():
  x = preprocessing.to_unit_interval(np.array([0, 51, 255], np.uint8))
  assert x.dtype == np.float32
  np.testing.assert_allclose(x, [0.0, 0.2, 1.0], rtol=1e-6)


def test_binarize_dynamic_mean_matches_p_and_changes_with_key():
  p = np.linspace(0.0, 1.0, 11, dtype=np.float32)
  x01 = np.broadcast_to(p, (20000, 11))
  draws = preprocessing.binarize_dynamic(jax.random.key(0), x01)
  assert draws.dtype == np.float32 and set(np.unique(draws)) <= {0.0, 1.0}
  # Standard error of each column mean is at most 0.5 / sqrt(20000) = 0.0035.
  np.testing.assert_allclose(draws.mean(axis=0), p, atol=0.015)
  other = preprocessing.binarize_dynamic(jax.random.key(1), x01)
  assert not np.array_equal(draws, other)
  np.testing.assert_array_equal(draws, preprocessing.binarize_dynamic(jax.random.key(0), x01))


def test_binarize_static_is_fixed_per_seed_and_on_with_probability_value_over_255():
  images = np.random.default_rng(4).integers(0, 256, (200, 28, 28), dtype=np.uint8)
  first = preprocessing.binarize_static(7, images)
  assert first.dtype == np.uint8 and set(np.unique(first)) <= {0, 255}
  np.testing.assert_array_equal(first, preprocessing.binarize_static(7, images))
  assert not np.array_equal(first, preprocessing.binarize_static(8, images))
  # Each pixel is on with probability value / 255: 0 never, 255 always, and each column of one value at its
  # own rate within 4 standard errors (a draw of p = 1 - value/255, or of value/256, fails here).
  values = np.array([0, 1, 51, 128, 204, 254, 255], np.uint8)
  on = preprocessing.binarize_static(3, np.broadcast_to(values, (20000, len(values)))).mean(axis=0) / 255
  p = values / 255
  assert on[0] == 0 and on[-1] == 1
  assert np.all(np.abs(on - p) <= 4 * np.sqrt(p * (1 - p) / 20000) + 1e-12), (on, p)
