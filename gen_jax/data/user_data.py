"""A user's own data: `npz:PATH` arrays and `images:DIR` folders of PNG/JPEG files.

Each loader returns `{'train': (images, labels), 'test': (images, labels) or None}` with images
(N, H, W, C) uint8 and labels (N,) int32 or None; `None` for test means the source has no test split
and the caller holds one out. Every problem with the user's files is a one-line `UserError`.
"""

import os

import numpy as np
from PIL import Image

from gen_jax.errors import UserError

NPZ_FORMAT = ("key 'x' of shape (N,H,W) or (N,H,W,C) with C in {1,3}, dtype uint8 in [0,255] "
              "or float in [0,1]; optional 'y' (N,) integer labels >= 0; optional 'x_test'/'y_test'")
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
# PIL modes holding one channel; a folder made only of these stays grayscale.
_GRAYSCALE_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F')
# PIL modes of 16-bit grayscale PNGs (PIL reads them as 'I;16' or 'I'): scaled to 8 bits by `_eight_bit`, since
# PIL's own convert() clips every value above 255 to white instead.
_SIXTEEN_BIT_MODES = ('I', 'I;16', 'I;16B', 'I;16L')


def _images_from_array(x, path, key) -> np.ndarray:
  """Validates the array `x` stored under `key` and returns it as (N, H, W, C) uint8."""
  where = f"npz:{path} key '{key}'"
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise UserError(f'{where} has shape {x.shape}; allowed: (N,H,W) or (N,H,W,C) with C in {{1,3}}')
  if min(x.shape[:3]) < 1:
    raise UserError(f'{where} has shape {x.shape}; allowed: N, H and W of at least 1')
  if x.dtype == np.uint8:
    return x
  if np.issubdtype(x.dtype, np.floating):
    low, high = float(np.min(x)), float(np.max(x))
    # `not (...)` also catches NaN, for which every comparison is false.
    if not (low >= 0.0 and high <= 1.0):
      raise UserError(f'{where} is float with values in [{low}, {high}]; allowed: [0, 1] '
                      '(or uint8 in [0, 255])')
    return np.round(x.astype(np.float64) * 255).astype(np.uint8)
  raise UserError(f'{where} has dtype {x.dtype}; allowed: uint8 in [0,255] or float in [0,1]')


def _labels_from_array(y, num_images, path, key) -> np.ndarray:
  where = f"npz:{path} key '{key}'"
  if not np.issubdtype(y.dtype, np.integer):
    raise UserError(f'{where} has dtype {y.dtype}; allowed: integer labels')
  if y.shape != (num_images,):
    raise UserError(f'{where} has shape {y.shape}; allowed: ({num_images},), one label per image')
  if y.size and y.min() < 0:
    raise UserError(f'{where} has label {y.min()}; allowed: labels >= 0')
  return y.astype(np.int32)


def load_npz(path: str) -> dict:
  """Reads `path` in the format `NPZ_FORMAT` describes.

  The train split is `x` (and `y`); the test split is `x_test` (and `y_test`) when the file has them,
  else None. `y_test` must be given exactly when `y` is, so that both splits are labelled or neither.
  """
  if not os.path.isfile(path):
    raise UserError(f'npz file {path!r} does not exist; allowed: npz:PATH to an existing .npz file')
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except Exception as e:  # np.load raises several types for a file that is not an npz archive.
    raise UserError(f'npz file {path!r} could not be read as .npz ({type(e).__name__}: '
                    f'{str(e).splitlines()[0] if str(e) else ""}); expected {NPZ_FORMAT}') from None
  if not isinstance(arrays, dict) or 'x' not in arrays:
    raise UserError(f"npz file {path!r} has no key 'x' (keys: {', '.join(sorted(arrays)) or 'none'})"
                    f'; expected {NPZ_FORMAT}')
  if ('y' in arrays) != ('y_test' in arrays) and 'x_test' in arrays:
    raise UserError(f"npz file {path!r} has only one of 'y' and 'y_test'; "
                    'allowed: both (labelled splits) or neither')
  if 'y_test' in arrays and 'x_test' not in arrays:
    raise UserError(f"npz file {path!r} has 'y_test' but no 'x_test'; allowed: 'x_test' with 'y_test'")
  splits = {'train': None, 'test': None}
  for split, x_key, y_key in (('train', 'x', 'y'), ('test', 'x_test', 'y_test')):
    if x_key not in arrays:
      continue
    images = _images_from_array(arrays[x_key], path, x_key)
    labels = None
    if y_key in arrays:
      labels = _labels_from_array(arrays[y_key], len(images), path, y_key)
    splits[split] = (images, labels)
  if splits['test'] is not None and splits['test'][0].shape[1:] != splits['train'][0].shape[1:]:
    raise UserError(f"npz file {path!r}: 'x_test' images are {splits['test'][0].shape[1:]} but 'x' "
                    f"images are {splits['train'][0].shape[1:]}; allowed: the same H, W and C")
  return splits


def _open_image(path) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()
  except Exception as e:  # PIL raises several types for damaged or unsupported files.
    raise UserError(f'image file {path!r} could not be read ({type(e).__name__}); '
                    'allowed: PNG or JPEG files') from None
  return image


def _eight_bit(image: Image.Image) -> Image.Image:
  """`image` with 16-bit grayscale values (0..65535) scaled to 8 bits (0..255, rounded); others unchanged."""
  if image.mode not in _SIXTEEN_BIT_MODES:
    return image
  values = np.asarray(image, np.float64) * (255.0 / 65535.0)
  return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))  # 2-D uint8: mode 'L'.


def center_square(image: Image.Image, size: int) -> Image.Image:
  """Crops the central square of `image` and resizes it to size x size (antialiased bicubic)."""
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  image = image.crop((left, top, left + side, top + side))
  if image.size != (size, size):
    image = image.resize((size, size), Image.Resampling.BICUBIC)
  return image


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes (N, H, W, C) uint8 images with `center_square`, image by image."""
  squeeze = images.shape[-1] == 1
  resized = np.stack([
      np.asarray(center_square(Image.fromarray(image[..., 0] if squeeze else image), size))
      for image in images])
  return resized[..., None] if squeeze else resized


def load_image_folder(directory: str, image_size: int) -> dict:
  """Reads every PNG/JPEG file under `directory` (recursive, sorted by relative path).

  Each image's central square is resized to image_size x image_size, so images are cropped, not
  stretched. The result has one channel when every file is grayscale and is RGB otherwise (alpha is
  dropped). There are no labels and no test split (the caller holds one out).
  """
  if not os.path.isdir(directory):
    raise UserError(f'image folder {directory!r} does not exist or is not a directory; '
                    'allowed: images:DIR with PNG/JPEG files under DIR')
  paths = sorted(
      os.path.relpath(os.path.join(root, name), directory)
      for root, _, names in os.walk(directory)
      for name in names if name.lower().endswith(IMAGE_SUFFIXES))
  if not paths:
    raise UserError(f'image folder {directory!r} holds no PNG/JPEG files '
                    f'(allowed suffixes: {", ".join(IMAGE_SUFFIXES)})')
  images = [_eight_bit(_open_image(os.path.join(directory, path))) for path in paths]
  mode = 'L' if all(image.mode in _GRAYSCALE_MODES for image in images) else 'RGB'
  pixels = np.stack([np.asarray(center_square(image.convert(mode), image_size))
                     for image in images])
  if mode == 'L':
    pixels = pixels[..., None]
  return {'train': (pixels, None), 'test': None}
