"""Checkpoints through orbax-checkpoint: whole training state plus the run's progress record.

A checkpoint holds two items: `state` (parameters, optimizer state(s), step; everything the step function
reads) and `progress` (step, epoch, offset in the epoch's permutation, examples seen, wall time so far).
The data order and every random draw are functions of (seed, step), so the step is all the randomness
depends on; the epoch and offset are recorded to make that visible and are checked on restore.

Saves are asynchronous (training continues while orbax writes) and atomic: orbax writes into a temporary
directory and renames it when complete, so a save interrupted half-way never damages an earlier checkpoint.
"""

import os

import jax
import orbax.checkpoint as ocp
from absl import logging

from gen_jax.errors import UserError


class Checkpointer:
  """Saves every `every_steps` (and when asked), keeps the latest `keep`, restores with fallback."""

  def __init__(self, directory, keep):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self):
    return sorted(self._manager.all_steps())

  def save(self, step, state, progress):
    """Starts an asynchronous save; returns as soon as the arrays are copied off the training path."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)), force=True)

  def wait(self):
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state):
    """(state, progress) from the newest checkpoint that restores, or None when there is none.

    A checkpoint that fails to restore is reported in one line and the previous one is tried. If some
    exist but none restores, that is an error; the files are left in place for inspection.
    """
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
      except Exception as error:  # orbax raises many types for damaged files; all mean "unusable".
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        logging.warning("checkpoint at step %d cannot be restored (%s); trying the previous one", step,
                        first_line)
        print(f"warning: checkpoint {self.directory}/{step} cannot be restored ({first_line}); "
              "falling back to the previous one", flush=True)
        continue
      return restored["state"], dict(restored["progress"])
    if steps:
      raise UserError(f"no checkpoint in {self.directory} can be restored (steps {steps}); the files are "
                      "left in place: move them away to start afresh")
    return None

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(state):
  """Shapes, dtypes and shardings of `state`, the restore target (so restored arrays land where needed)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
