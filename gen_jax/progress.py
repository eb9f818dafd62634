"""The console: a progress line with an ETA for long work outside training (the k = 5000 evaluation, sample
scoring, classifier training), printed as training prints its own lines, at most every `every_seconds`; and
console streams whose failure cannot stop a run (`OutlivesItsReader`)."""

import errno
import os
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


class OutlivesItsReader:
  """A training run's console stream (sys.stdout, sys.stderr), whose failure cannot stop the run.

  A run's record is its workdir, never its console: when the reader of a pipe goes away (`... | head`, a `tee`
  that died), a terminal closes, or a redirected log's disk fills, the next print raises an OSError that would
  otherwise stop the run like a failed checkpoint. Here the first such failure points the stream's file
  descriptor at /dev/null, and what was being written (and everything after it, Python's own flush at exit
  included) goes there. Other errors (a full non-blocking pipe, say) are raised as before.
  """

  # What "the console went away" looks like: no reader, a disk (or quota) full, a terminal gone.
  GONE = frozenset((errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EIO))

  def __init__(self, stream):
    self._stream = stream

  def write(self, text):
    return self._outliving(self._stream.write, text)

  def writelines(self, lines):
    return self._outliving(self._stream.writelines, lines)

  def flush(self):
    return self._outliving(self._stream.flush)

  def __getattr__(self, name):  # fileno, isatty, encoding ...: the stream's own.
    if name == "_stream":  # Not set yet (a copy being made): no stream to ask.
      raise AttributeError(name)
    return getattr(self._stream, name)

  def _outliving(self, operation, *args):
    try:
      return operation(*args)
    except OSError as error:
      if error.errno not in self.GONE:
        raise
      try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)
        return operation(*args)  # The buffered text now drains into /dev/null.
      except (OSError, ValueError):  # No descriptor to redirect (an in-memory stream): drop the text.
        return None
