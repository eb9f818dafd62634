"""Checkpoints through orbax-checkpoint: whole training state plus the run's progress record.

A checkpoint holds two items: `state` (parameters, optimizer state(s), step; everything the step function
reads) and `progress` (step, epoch, offset in the epoch's permutation, examples seen, wall time so far, the
per-step metrics since the last train row with their training seconds, the early-stopping record). The data
order and every random draw are functions of (seed, step), so the step is all the randomness depends on; the
epoch and offset are recorded to make that visible, and the epoch is checked on restore (another batch size
or data would move it).

Saves are asynchronous (training continues while orbax writes) and atomic: orbax writes into a temporary
directory and renames it when complete, so a save interrupted half-way never damages an earlier checkpoint.
"""

import errno
import math
import os
import pathlib
import re
import sys

import jax
import numpy as np
from absl import logging

from gen_jax.errors import UserError
from gen_jax.models import networks


class _Orbax:
  """orbax.checkpoint, imported on its first use: it costs ~0.25 s at start-up, which a command refused before
  it trains, or one that never checkpoints, does not need."""

  def __getattr__(self, name):
    import orbax.checkpoint
    return getattr(orbax.checkpoint, name)


ocp = _Orbax()


# How an I/O failure reads when orbax's writer (TensorStore, in a background thread) reports it: as a
# ValueError naming the OS error, not as an OSError.
_OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'")
_IO_FAILURE_MARKS = ("RESOURCE_EXHAUSTED", "No space left", "Permission denied", "Read-only file system",
                     "Input/output error")


def _as_os_error(error, directory):
  """`error` as the OSError it reports (ENOSPC, EACCES, EROFS, EIO ...), or None if it is not an I/O failure."""
  if isinstance(error, OSError):
    return error
  text = str(error)
  code = _OS_ERROR_CODE.search(text)
  if code is None and not any(mark in text for mark in _IO_FAILURE_MARKS):
    return None
  number = int(code.group(1)) if code else errno.EIO
  return OSError(number, f"{os.strerror(number)} while saving a checkpoint", directory)


class _HandledIOFailures(logging.logging.Filter):
  """Drops orbax's own log record (an ERROR with a 50-line traceback, from its writer thread) of an I/O
  failure that `Checkpointer` turns into an OSError: the run reports that failure itself, in one line."""

  def filter(self, record):
    failure = record.exc_info[1] if record.exc_info else None
    return not (_OS_ERROR_CODE.search(record.getMessage()) or (failure and _as_os_error(failure, "")))


logging.get_absl_logger().addFilter(_HandledIOFailures())


def _is_orphaned_write_callback(unraisable):
  """A RuntimeError('Event loop is closed') raised by asyncio's call_soon_threadsafe, called from C (no Python
  caller, no object): TensorStore's callback of a write that outlived the save orbax already gave up on."""
  error, traceback = unraisable.exc_value, unraisable.exc_traceback
  if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed" and traceback is not None
          and unraisable.object is None):
    return False
  return traceback.tb_frame.f_code.co_name == "call_soon_threadsafe"


def _is_abandoned_read(unraisable):
  """The Exception that orbax's array read makes of the GeneratorExit closing it (its `except BaseException`
  re-raises everything): a read still pending when a sibling read failed, which orbax left behind by closing
  its event loop without cancelling it, closed when the process collects it (at exit, one per array)."""
  error, coroutine = unraisable.exc_value, unraisable.object
  return (isinstance(error, Exception) and isinstance(error.__cause__, GeneratorExit)
          and getattr(getattr(coroutine, "cr_code", None), "co_name", None) == "_read_array_index_and_device_put")


def _drop_orphaned_write_callbacks():
  """When a save fails (a full disk, say), TensorStore still completes that save's other writes, and their
  callbacks reach the asyncio loop orbax has closed, some before the failure reaches the loop: each would
  print a traceback (through sys.unraisablehook) beside the run's one-line error. Likewise when a restore
  fails on one array (a damaged file), the reads of the others are left pending (`_is_abandoned_read`). Those,
  and only those, are dropped, for the rest of the process; the failure itself is reported by its caller."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_orphaned_write_callbacks", False):
    return

  def hook(unraisable):
    if not (_is_orphaned_write_callback(unraisable) or _is_abandoned_read(unraisable)):
      previous(unraisable)

  hook.drops_orphaned_write_callbacks = True
  sys.unraisablehook = hook


def selection_key(metrics):
  """The rank of a checkpoint saved with selection metrics: its validation value, then the earlier step, so
  that of two equal values the first wins, as the early-stopping rule's strict improvement has it. A NaN ranks
  below every number, as in that rule (compared as is, it would be neither better nor worse than anything and
  could displace the best)."""
  return (validation_rank(metrics["value"]), -metrics["step"])


def validation_rank(value):
  """A validation value as checkpoints are ranked and early stopping compares them: a NaN as −inf."""
  return -math.inf if math.isnan(value) else value


def saved_steps(directory):
  """The steps of the checkpoints in `directory`, read from the folder names (orbax names each by its step; an
  unfinished save carries a suffix) without opening a manager, which would create the folder."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


class SettingsMismatch(UserError):
  """The checkpoints hold another model (other array names or shapes) than the one the settings build: the
  settings differ from the run's (a config.json edited by hand, say), the checkpoints are fine."""

  def __init__(self, directory, difference):
    super().__init__(f"the settings in {os.path.join(os.path.dirname(directory), 'config.json')} do not build "
                     f"the model that the checkpoints in {directory} hold ({difference}); allowed: the settings "
                     "the run was trained with (flags.txt keeps the flags of every start), or a fresh --workdir; "
                     "the checkpoints are left as they are")


def _first_line(error):
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def stored_shapes(checkpoint_directory):
  """{array name: shape} of the `state` item of a checkpoint (orbax's dotted names, such as
  params.encoder.Dense_0.kernel), from its metadata alone; None when that cannot be read (damaged files: the
  restore reports them)."""
  try:
    metadata = ocp.StandardCheckpointHandler().metadata(pathlib.Path(checkpoint_directory) / "state")
    return {leaf.name: tuple(getattr(leaf, "shape", None) or ()) for leaf in jax.tree.leaves(metadata)}
  except Exception:  # orbax raises many types for damaged or missing metadata.
    return None


def _expected_shapes(abstract_state):
  names = ocp.tree.get_param_names(abstract_state, include_empty_nodes=False)
  return {name: np.shape(leaf) for name, leaf in zip(jax.tree.leaves(names), jax.tree.leaves(abstract_state))}


def _shape_difference(stored, abstract_state):
  """None when `stored` (`stored_shapes`) holds exactly the arrays of `abstract_state`, else the first
  difference in words, the parameters' before the optimizer state's (which only mirrors them)."""
  expected = _expected_shapes(abstract_state)
  for name in sorted(set(stored) | set(expected), key=lambda name: (not name.startswith("params."), name)):
    if name not in expected:
      return f"they hold {name}, which the settings do not build"
    if name not in stored:
      return f"they lack {name}, which the settings build"
    if stored[name] != expected[name]:
      return f"{name} has shape {stored[name]} there, {expected[name]} in the model of the settings"
  return None


def _layouts(abstract_state):
  """(restore target, conversion to `abstract_state`'s layout or None) for the current layout and each of
  `networks.LEGACY_LAYOUTS` that changes something in this state."""
  layouts = [(abstract_state, None)]
  for to_legacy, from_legacy in networks.LEGACY_LAYOUTS.values():
    legacy_target = to_legacy(abstract_state)
    if jax.tree.structure(legacy_target) != jax.tree.structure(abstract_state):
      layouts.append((legacy_target, from_legacy))
  return layouts


def _fitting_layout(stored, abstract_state):
  """The `_layouts` entry whose arrays are those of `stored`; when there is none, a ValueError whose message is
  the difference from the current layout (`_shape_difference`)."""
  for target, convert in _layouts(abstract_state):
    if _shape_difference(stored, target) is None:
      return target, convert
  raise ValueError(_shape_difference(stored, abstract_state))


def check_settings_fit(directory, abstract_state):
  """Raises `SettingsMismatch` when `directory` holds checkpoints and none of them holds the model of
  `abstract_state` (in its layout or a legacy one); reads metadata only and writes nothing, so that a run
  refuses before it takes its workdir. A checkpoint whose metadata cannot be read passes: the restore reports it."""
  differences = []
  for step in reversed(saved_steps(directory)):
    stored = stored_shapes(os.path.join(directory, str(step)))
    if stored is None:
      return
    try:
      _fitting_layout(stored, abstract_state)
      return
    except ValueError as difference:
      differences.append(str(difference))
  if differences:
    raise SettingsMismatch(os.path.abspath(directory), differences[0])


class Checkpointer:
  """Saves when asked, keeps the latest `keep` (and with `selecting`, the best by `selection_key` too, through
  orbax's preservation policies), restores with fallback."""

  def __init__(self, directory, keep, selecting=False):
    self.directory = os.path.abspath(directory)
    if selecting:
      preservation = ocp.checkpoint_managers.AnyPreservationPolicy([
          ocp.checkpoint_managers.LatestN(keep),
          ocp.checkpoint_managers.BestN(get_metric_fn=selection_key, n=1, keep_checkpoints_without_metrics=False)])
      self._options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=True,
                                                   preservation_policy=preservation, best_fn=selection_key,
                                                   best_mode="max")
    else:
      self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)
    _drop_orphaned_write_callbacks()

  def all_steps(self):
    return sorted(self._manager.all_steps())

  def best_step(self):
    """The step of the best checkpoint saved with selection metrics (None when there is none)."""
    steps = [step for step in self._manager.all_steps() if self._manager.metrics(step) is not None]
    return self._manager.best_step() if steps else None

  def save(self, step, state, progress, selection_value=None):
    """Starts an asynchronous save; returns as soon as the arrays are copied off the training path.

    `selection_value` (a validation metric, higher is better) ranks the checkpoint for `best_step`.
    """
    metrics = None if selection_value is None else {"value": float(selection_value), "step": int(step)}
    self._io_errors_as_os_errors(lambda: self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)), metrics=metrics, force=True))

  def wait(self):
    self._io_errors_as_os_errors(self._manager.wait_until_finished)

  def _io_errors_as_os_errors(self, operation):
    """Runs `operation`; an I/O failure of an asynchronous save (reported by the next save or wait) is
    re-raised as the OSError it is, so that the loop stops the run in one line (`loop.WriteFailed`)."""
    try:
      return operation()
    except Exception as error:
      os_error = _as_os_error(error, self.directory)
      if os_error is None or os_error is error:
        raise
      raise os_error from None

  def restore(self, abstract_state, step=None, set_aside=True):
    """(state, progress) of checkpoint `step`, or of the newest one that restores when `step` is None
    (None when there is none): the one restore path of training, `load_run` and every script.

    A latest checkpoint that fails to restore is passed over for the previous one, and each one passed over is
    reported in one line once one restores; with `set_aside` (training, which holds the run lock) they are
    then moved out of the way. A reader (`load_run`, the scripts) leaves them: the run may be training, and
    deleting the checkpoint the reader tried, at that moment. If some exist but none restores, that is an
    error (`SettingsMismatch` when every one holds another model than `abstract_state`); the files are left in
    place.
    """
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise UserError(f"step={step} has no checkpoint in {self.directory}; allowed: one of {steps}")
      return self._restore_step(step, abstract_state)
    failures = {}
    for candidate in reversed(steps):
      try:
        restored = self._restore_step(candidate, abstract_state)
      except Exception as error:  # orbax raises many types for damaged files; all mean "unusable".
        failures[candidate] = error
        continue
      for failed, error in failures.items():
        print(f"warning: checkpoint {self.directory}/{failed} cannot be restored ({_first_line(error)}); "
              f"using the previous one that restores, at step {candidate}", flush=True)
      if failures and set_aside:
        self._set_aside(list(failures))
      return restored
    if not steps:
      return None
    if all(isinstance(error, SettingsMismatch) for error in failures.values()):
      raise failures[steps[-1]]
    latest, error = next((step, error) for step, error in failures.items()
                         if not isinstance(error, SettingsMismatch))
    raise UserError(f"no checkpoint in {self.directory} can be restored (steps {steps}; step {latest}: "
                    f"{_first_line(error)}); the files are left in place; allowed: checkpoints that restore "
                    "(to start afresh, move the damaged ones out of that folder) or a fresh --workdir")

  def _restore_step(self, step, abstract_state):
    """(state, progress) of checkpoint `step` in the layout of `abstract_state`, also when it was saved in one
    of `networks.LEGACY_LAYOUTS`: restored into that layout, then converted.

    The layout is chosen from the checkpoint's metadata, before any array is read: a checkpoint of another
    model raises `SettingsMismatch` without starting reads that would fail (orbax leaves the reads of the
    other arrays unfinished, and each prints a traceback when the process exits). Without readable metadata
    each layout is tried in turn and the first error is raised.
    """
    layouts = _layouts(abstract_state)
    stored = stored_shapes(os.path.join(self.directory, str(step)))
    if stored is not None:
      try:
        layouts = [_fitting_layout(stored, abstract_state)]
      except ValueError as difference:
        raise SettingsMismatch(self.directory, str(difference)) from None
    first_error = None
    for target, convert in layouts:
      try:
        state, progress = self._restore_in_layout(step, target)
      except Exception as error:
        first_error = first_error or error
        continue
      return (state if convert is None else convert(abstract_state, state)), progress
    raise first_error

  def _restore_in_layout(self, step, abstract_state):
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["progress"])

  def _set_aside(self, steps):
    """Moves unrestorable checkpoints newer than the one restored out of the way, keeping their files.

    The resumed run saves those steps again; orbax refuses to overwrite, and the damaged files may still
    matter to whoever investigates, so they go to `<workdir>/damaged_checkpoints/` rather than away.
    """
    if jax.process_index() == 0:
      destination = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints")
      os.makedirs(destination, exist_ok=True)
      for step in steps:
        target = os.path.join(destination, str(step))
        suffix = 1
        while os.path.exists(target):
          target, suffix = os.path.join(destination, f"{step}.{suffix}"), suffix + 1
        os.replace(os.path.join(self.directory, str(step)), target)
    self._manager.close()
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

  def close(self):
    self.wait()
    self._manager.close()


def abstract_like(state):
  """Shapes, dtypes and shardings of `state`, the restore target (so restored arrays land where needed)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
