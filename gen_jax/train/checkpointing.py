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
    self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

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
    unusable = []
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
        unusable.append(step)
        continue
      if unusable:
        self._set_aside(unusable)
      return restored["state"], dict(restored["progress"])
    if steps:
      raise UserError(f"no checkpoint in {self.directory} can be restored (steps {steps}); the files are "
                      "left in place: move them away to start afresh")
    return None

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
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(state):
  """Shapes, dtypes and shardings of `state`, the restore target (so restored arrays land where needed)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def load_state_arrays(workdir, step=None):
  """(state tree of arrays on this process's first device, step) from a workdir's checkpoint.

  For tools that read a finished run (evaluation, figures, tests): the arrays land on one local device
  whatever mesh saved them, so a checkpoint from 8 GPUs or two hosts opens on a laptop. `step=None` takes
  the newest checkpoint.
  """
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  steps = sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []
  if not steps:
    raise UserError(f"no checkpoint in {directory}; allowed: the --workdir of a run that saved one")
  step = steps[-1] if step is None else step
  path = os.path.join(directory, str(step), "state")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata
    metadata = getattr(metadata, "tree", metadata)
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), metadata)
    return checkpointer.restore(path, target), step
