"""The run's record: `metrics.jsonl` rows, TensorBoard scalars and absl log lines.

Rows follow the workdir contract (README, "What a workdir holds"): every row has `step`, `examples_seen`, `split` and
`wall_time`. A resumed run replays the steps after its checkpoint and so recomputes rows that the killed
run had already written; those rows are bit-identical apart from timing, so the writer recognises them
by (split, step, metric names) and does not append them again. The file is only ever appended to, never
rewritten; a last line cut short by a kill mid-write is the one thing removed.
"""

import json
import math
import os

import numpy as np
from absl import logging

from gen_jax import files

TIMING_KEYS = ("wall_time", "examples_per_sec")


def _row_identity(row, identity_keys):
  """What makes a row the same row again: split, step, metric names, and the values of `identity_keys`
  (settings that tell apart rows with the same names, such as the k of two likelihood evaluations)."""
  return (row["split"], int(row["step"]), tuple(sorted(k for k in row if k not in TIMING_KEYS)),
          tuple(row.get(k) for k in identity_keys))


def _to_json_value(value):
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep the row parseable and the fact visible.
  return value


read_rows = files.read_json_lines  # All complete rows of a metrics.jsonl file.


class MetricWriter:
  """Appends rows to metrics.jsonl and TensorBoard; a no-op on processes other than 0."""

  def __init__(self, workdir, enabled=True, identity_keys=()):
    self.enabled = enabled
    self.identity_keys = tuple(identity_keys)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._written = set()
    self._tensorboard = None
    self._tensorboard_dir = os.path.join(workdir, "tensorboard") if enabled else None
    if not enabled:
      return
    self._drop_torn_last_line()
    self._written = {_row_identity(row, self.identity_keys) for row in read_rows(self.path)}

  def _events(self):
    """The TensorBoard writer, made at the first row written: a writer that writes nothing (the rerun of a
    finished run, a score already appended) leaves no new event file in the workdir."""
    if self._tensorboard is None and self._tensorboard_dir is not None:
      try:
        from tensorboardX import SummaryWriter
        self._tensorboard = SummaryWriter(self._tensorboard_dir)
      except ImportError:
        logging.warning("tensorboardX is not installed; no TensorBoard event files")
        self._tensorboard_dir = None
    return self._tensorboard

  def _drop_torn_last_line(self):
    if not os.path.exists(self.path):
      return
    with open(self.path, "rb+") as f:
      data = f.read()
      if data and not data.endswith(b"\n"):
        f.truncate(data.rfind(b"\n") + 1)

  def write(self, row):
    """Writes one row unless an identical one (timing aside) is already in the file; True if it wrote."""
    if not self.enabled:
      return False
    row = {key: _to_json_value(value) for key, value in row.items()}
    identity = _row_identity(row, self.identity_keys)
    if identity in self._written:
      return False
    self._written.add(identity)
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")  # One write per row: a kill leaves at most one torn line.
    events = self._events()
    if events is not None:
      for key, value in row.items():
        if key not in ("step", "split") and isinstance(value, (int, float)):
          events.add_scalar(f"{row['split']}/{key}", value, row["step"])
      events.flush()
    return True

  def has_row(self, split, step, **identity_values):
    """Whether a row of `split` at `step` is in the file whose identity keys have `identity_values` (an
    `iwae_k=5000`, say), whatever its metrics otherwise."""
    wanted = [(self.identity_keys.index(key), value) for key, value in identity_values.items()]
    return any(identity[:2] == (split, int(step)) and all(identity[3][index] == value for index, value in wanted)
               for identity in self._written)

  def close(self):
    if self._tensorboard is not None:
      self._tensorboard.close()
