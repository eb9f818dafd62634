"""A progress line with an ETA for long work outside training (the k = 5000 evaluation, sample scoring,
classifier training), printed as training prints its own lines, at most every `every_seconds`."""

import sys
import time


class Progress:
  """`update(done)` after each unit of work; prints `label: done/total (percent), ETA s` now and then."""

  def __init__(self, label, total, every_seconds=10.0, stream=None):
    self.label, self.total, self.every_seconds = label, total, every_seconds
    self.stream = stream or sys.stdout
    self.start = self._last_print = time.time()

  def update(self, done):
    """Reports `done` of `total` units if `every_seconds` have passed since the last line."""
    now = time.time()
    if now - self._last_print < self.every_seconds:
      return  # Short work stays silent; long work reports every `every_seconds`.
    self._last_print = now
    elapsed = now - self.start
    remaining = elapsed / done * (self.total - done) if done else float("nan")
    print(f"{self.label}: {done}/{self.total} ({done / max(self.total, 1):.0%}) in {elapsed:.0f}s, "
          f"ETA {remaining:.0f}s", file=self.stream, flush=True)
