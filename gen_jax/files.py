"""Files that are never half-written: everything a later run reads is written to a temporary name in the
same directory and renamed into place (a rename within one file system is atomic on POSIX).

A kill, a full disk or an I/O error during the write leaves the previous file (or none) and at most a
stray temporary file, never a torn file that a later run would choke on. `held_lock` keeps processes that
would write the same files (a dataset's first preparation) from doing it at once.
"""

import contextlib
import errno
import fcntl
import json
import os
import tempfile

import numpy as np


def read_json_lines(path):
  """The complete rows of a JSON-lines file such as metrics.jsonl (a torn last line is ignored; no file: [])."""
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.endswith("\n"):
          rows.append(json.loads(line))
  return rows


def write_atomically(path, write, mode="w"):
  """Calls `write(file)` on a temporary file beside `path`, then renames it to `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(handle, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the file from others sharing the folder.
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_cache(path, write, mode="w"):
  """`write_atomically` for a derived file that is rebuilt when missing (a decoded split, reference
  statistics): a folder that refuses it (read-only, shared, not ours) is not an error. True if written."""
  try:
    write_atomically(path, write, mode)
  except OSError as error:
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
      return False
    raise
  return True


def write_json(path, value):
  write_atomically(path, lambda f: json.dump(value, f, indent=1, sort_keys=True))


def write_text(path, text):
  write_atomically(path, lambda f: f.write(text))


def save_npy(path, array):
  write_atomically(path, lambda f: np.save(f, array), mode="wb")


@contextlib.contextmanager
def held_lock(path, wait=True):
  """Holds an exclusive `flock` on `path` (created if missing) for the `with` block and yields the open file
  descriptor; the kernel releases the lock however the process ends, so a killed holder never blocks anyone.
  wait=False: raises BlockingIOError at once, instead of waiting, when another process holds it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    yield descriptor
  finally:
    os.close(descriptor)  # Closing the descriptor releases the lock.
