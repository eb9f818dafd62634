"""Image datasets as the training loop wants them: resident uint8 arrays and on-device batch forming.

Both splits are loaded into memory once. The training split lives on every device as uint8 (a quarter of
the float32 size) and each batch is gathered, scaled and, for dynamic binarisation, drawn afresh on the
device inside the jitted step, from the step's key: the input pipeline is never what the accelerator waits
for. The test split of a dynamically binarised run is binarised once with a fixed seed, so that test
numbers are comparable across evaluations and runs (the IWAE protocol's fixed test draw).
"""

import dataclasses
from typing import Optional

import numpy as np

from gen_jax import config as config_lib
from gen_jax.data import load_split, preprocessing
from gen_jax.errors import UserError

TEST_BINARIZATION_SEED = 0xB1
VALIDATION_BINARIZATION_SEED = 0xB2
VAMPPRIOR_CODE_SEED = 777


def _own_seeds_draw(validation_images, test_images):
  """Each split binarised with its own seed, so neither split's size moves the other's bits."""
  return (None if validation_images is None else
          preprocessing.binarize_static(VALIDATION_BINARIZATION_SEED, validation_images),
          preprocessing.binarize_static(TEST_BINARIZATION_SEED, test_images))


def _vampprior_code_draw(validation_images, test_images):
  """The draw of the VampPrior code (Tomczak & Welling), kept by the Exemplar VAE code whose table the density
  flagfiles reproduce: `np.random.seed(777)`, then `np.random.binomial(1, x / 255.)` of the float64 validation
  images, then of the test images, in file order. NumPy's legacy stream is frozen, so these are the very bits
  its published numbers were measured on (without a validation split, the test bits it would draw then)."""
  stream = np.random.RandomState(VAMPPRIOR_CODE_SEED)
  draw = lambda images: (stream.binomial(1, np.asarray(images) / 255.0) * 255).astype(np.uint8)
  validation = None if validation_images is None else draw(validation_images)
  return validation, draw(test_images)


# --held_out_binarization -> (validation images or None, test images) -> the same, binarised once.
HELD_OUT_DRAWS = {"own_seeds": _own_seeds_draw, "vampprior_code": _vampprior_code_draw}
assert tuple(HELD_OUT_DRAWS) == config_lib.HELD_OUT_BINARIZATIONS


@dataclasses.dataclass(frozen=True)
class ImageData:
  train_images: np.ndarray  # (N, H, W, C) uint8
  train_labels: Optional[np.ndarray]
  test_images: np.ndarray  # Already binarised where the run binarises; scale by 1/255.
  test_labels: Optional[np.ndarray]
  num_classes: Optional[int]
  # The last `num_validation_examples` of the training split, held out and prepared like the test split.
  validation_images: Optional[np.ndarray] = None
  validation_labels: Optional[np.ndarray] = None

  @property
  def image_shape(self):
    return tuple(self.train_images.shape[1:])

  def device_data(self, with_labels=False):
    """The pytree the loop places on every device once."""
    data = {"images": self.train_images}
    if with_labels:
      data["labels"] = self.train_labels
    return data


def _hold_out(images, labels, count, dataset):
  """(train images, train labels, validation images, validation labels): the last `count` examples held out."""
  if count >= len(images):
    raise UserError(f"--num_validation_examples={count} leaves no training examples of the {len(images)} in "
                    f"--dataset={dataset}; allowed: fewer than {len(images)}")
  keep = len(images) - count
  held_labels = (None, None) if labels is None else (labels[:keep], labels[keep:])
  return images[:keep], held_labels[0], images[keep:], held_labels[1]


def load_image_data(config, num_validation_examples=0):
  """Both splits of `config.dataset`, binarised as `config.binarization` asks, with the last
  `num_validation_examples` training examples (if any) held out as a validation split.

  Held-out and test images of a binarised run are binarised once, by the fixed draw
  `config.held_out_binarization` names (`HELD_OUT_DRAWS`), so every evaluation of every run sees the same bits.
  """
  kwargs = dict(data_dir=config.data_dir, image_size=config.image_size or None)
  train = load_split(config.dataset, "train", num_examples=config.num_train_examples or None, **kwargs)
  test = load_split(config.dataset, "test", num_examples=config.num_test_examples or None, **kwargs)
  train_images, train_labels, test_images = train.images, train.labels, test.images
  validation_images = validation_labels = None
  if num_validation_examples:
    train_images, train_labels, validation_images, validation_labels = _hold_out(
        train_images, train_labels, num_validation_examples, config.dataset)
  if config.binarization == "static":
    train_images = preprocessing.binarize_static(config.seed, train_images)
  if config.binarization in ("static", "dynamic"):
    validation_images, test_images = HELD_OUT_DRAWS[config.held_out_binarization](validation_images, test_images)
  return ImageData(train_images, train_labels, test_images, test.labels, train.num_classes, validation_images,
                   validation_labels)


def make_batch_fn(binarization, with_labels=False):
  """make_batch(data, indices, key) -> {'x': float32 in [0, 1], ['labels']}, formed on the device."""

  def make_batch(data, indices, key):
    x = preprocessing.to_unit_interval(data["images"][indices])
    if binarization == "dynamic":
      x = preprocessing.binarize_dynamic(key, x)
    batch = {"x": x}
    if with_labels:
      batch["labels"] = data["labels"][indices]
    return batch

  return make_batch


def evaluation_chunks(num_examples, chunk_size):
  """(start, stop) pairs covering the split; the last chunk is padded and masked by the evaluator."""
  return [(start, min(start + chunk_size, num_examples)) for start in range(0, num_examples, chunk_size)]


def padded_chunk(array, start, stop, chunk_size):
  """array[start:stop] padded with copies of its first row to `chunk_size`, plus the validity mask.

  Padding keeps one compiled shape for every chunk, the last one included.
  """
  chunk = array[start:stop]
  mask = np.zeros(chunk_size, np.float32)
  mask[:stop - start] = 1.0
  if stop - start < chunk_size:
    pad = np.repeat(chunk[:1], chunk_size - (stop - start), axis=0)
    chunk = np.concatenate([chunk, pad])
  return chunk, mask


def as_unit_images(x):
  """Images as float32 in [0, 1]: uint8 input is scaled by 1/255, float input is taken as it is."""
  x = np.asarray(x)
  return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def checked_images(x, image_shape, binary=False):
  """The images a user hands a run's operations, as the run takes them: (N, *image_shape), uint8 in 0..255 or
  floats in [0, 1]; for one channel (N, H, W) is taken too and gets its channel axis. Anything else would be
  scored or encoded as something it is not (a missing channel axis read as 28 one-pixel-wide images, floats
  in 0..255 as probabilities), so it is refused in one line. `binary`: the run models bits (it binarises),
  so its likelihood of grey pixels would be a number of nothing; those are refused too."""
  x = np.asarray(x)
  shape = tuple(image_shape)
  if shape[-1] == 1 and x.shape[1:] == shape[:-1]:
    x = x[..., None]
  allowed_shapes = f"(N, {', '.join(map(str, shape))})" + (f" or (N, {shape[0]}, {shape[1]})" if shape[-1] == 1 else "")
  if x.ndim != len(shape) + 1 or x.shape[1:] != shape or not len(x):
    raise UserError(f"images of shape {x.shape}; allowed: {allowed_shapes} with N >= 1, the run's image shape")
  top = 255 if x.dtype == np.uint8 else 1.0
  if x.dtype != np.uint8 and not (np.issubdtype(x.dtype, np.floating) and np.all((x >= 0) & (x <= 1))):
    low, high = (x.min(), x.max()) if np.issubdtype(x.dtype, np.number) else ("?", "?")
    raise UserError(f"{x.dtype} images with values in [{low}, {high}]; allowed: uint8 in 0..255 or floats in [0, 1]")
  if binary and not np.all((x == 0) | (x == top)):
    raise UserError(f"images with values between 0 and {top} for a run that binarises, whose likelihood is of "
                    f"bits; allowed: binary images, 0 or {top} (the run's dataset.test_images are)")
  return x


def checked_labels(labels, count, num_classes):
  """The `labels=` a user hands a run's operations, as `count` int32 classes in 0..num_classes-1; None stays
  None. A model without classes (num_classes None) refuses any: it would ignore them without a word."""
  if labels is None:
    return None
  labels = np.asarray(labels, np.int32).reshape(-1)
  shown = f"labels= {labels[:8].tolist()}{' ...' if len(labels) > 8 else ''} ({len(labels)} of them)"
  if num_classes is None:
    raise UserError(f"{shown} for a model without classes; allowed: no labels (only a conditional run, a CVAE or "
                    "a conditional GAN, takes a class)")
  if len(labels) != count or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
    raise UserError(f"{shown} for {count} outputs; allowed: {count} classes in 0..{num_classes - 1}")
  return labels


def require_labels(data, dataset, setting):
  """One line when `setting` (e.g. "--conditional") needs labels that `dataset` does not have."""
  if data.train_labels is None:
    raise UserError(f"{setting} needs labels, but --dataset={dataset} has none; allowed: a labelled dataset "
                    "(fashion_mnist, mnist, npz with y)")
