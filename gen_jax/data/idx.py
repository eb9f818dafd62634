"""Reading and writing IDX files, the format of the MNIST family (optionally gzipped).

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order. MNIST and Fashion-MNIST only use uint8.
"""

import gzip
import os
import struct

import numpy as np

# IDX dtype codes; values wider than a byte are big-endian.
_CODE_TO_DTYPE = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8'),
}
_DTYPE_TO_CODE = {dt.newbyteorder('>') if dt.itemsize > 1 else dt: code
                  for code, dt in _CODE_TO_DTYPE.items()}


def _open(path, mode):
  path = os.fspath(path)
  return gzip.open(path, mode) if path.endswith('.gz') else open(path, mode)


def read_idx(path) -> np.ndarray:
  """Returns the array stored in the IDX file at `path` ('.gz' is decompressed)."""
  with _open(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _CODE_TO_DTYPE:
    raise ValueError(f'{path} is not an IDX file (bad magic number)')
  dtype, ndim = _CODE_TO_DTYPE[data[2]], data[3]
  shape = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
  offset = 4 + 4 * ndim
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(data) - offset != expected:
    raise ValueError(f'{path}: IDX header promises {expected} bytes of data, '
                     f'found {len(data) - offset}')
  array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
  return array.astype(dtype.newbyteorder('='))


def write_idx(path, array: np.ndarray) -> None:
  """Writes `array` to `path` in IDX format, gzipped when `path` ends in '.gz'."""
  array = np.asarray(array)
  dtype = array.dtype.newbyteorder('>') if array.dtype.itemsize > 1 else array.dtype
  if dtype not in _DTYPE_TO_CODE:
    raise ValueError(f'IDX cannot store dtype {array.dtype}')
  header = bytes([0, 0, _DTYPE_TO_CODE[dtype], array.ndim])
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  with _open(path, 'wb') as f:
    f.write(header + array.astype(dtype).tobytes())
