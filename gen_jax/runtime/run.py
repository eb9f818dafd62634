"""Training a family's run, and opening a trained one: the one path both go through.

`train_and_evaluate(family, config, workdir)` is what every experiment runs: validate, build the task
(data loaded, nothing written), then take the workdir's run lock, record the settings and train. A bad
setting therefore never touches the workdir.

`open_run(family, config, workdir, step)` builds the same task, restores a checkpoint through the same
`Checkpointer.restore` the loop uses, and returns a `Run`: its config, state, metrics rows and the family's
operations (`sample`, `encode`, `decode`, `reconstruct`, `log_likelihood`, `test_log_likelihood`). The
registry's `gen_jax.load_run(workdir)` finds the family in config.json and calls it.

A family is any object with NAME, Config, MAY_CHANGE_ON_RESUME, OPERATIONS, validate(config) and
make_task(config, workdir, mesh) -> loop.Task (see `gen_jax/families/__init__.py`); both paths call
`validate` first, so `make_task` is handed only configs its family accepts.
"""

import numbers
import os
import time

import jax
import numpy as np

from gen_jax import config as config_lib, parallel
from gen_jax.data import image_data
from gen_jax.errors import UserError
from gen_jax.runtime import checkpointing, host_memory, loop, metrics as metrics_lib, workdir as workdir_lib


def prepared_mesh():
  """The data mesh over every device; on the CPU, with malloc told to keep freed memory for the next
  dispatch's buffers (`host_memory`: the DCGAN step 1.3x faster)."""
  mesh = parallel.make_mesh()
  host_memory.keep_freed_memory(mesh.devices.flat[0].platform)
  return mesh


def train_and_evaluate(family, config, workdir, flags_text=None):
  """Trains (or resumes) a run of `family` in `workdir`; returns the final state."""
  family.validate(config)
  workdir_lib.check_workdir(workdir)
  settings = workdir_lib.settings_record(family.NAME, config)
  defaults = workdir_lib.settings_record(family.NAME, type(config)())
  may_change = config_lib.may_change_on_resume(config, family.MAY_CHANGE_ON_RESUME)
  workdir_lib.check_resumable(workdir, settings, may_change, defaults)
  mesh = prepared_mesh()
  task = family.make_task(config, workdir, mesh)
  parallel.check_batch_divisible(task.schedule.batch_size, mesh)
  checkpoints = os.path.join(workdir, "checkpoints")
  saved = checkpointing.saved_steps(checkpoints)
  if saved and saved[-1] > task.schedule.num_steps:  # Else it would end at once, short of its final evaluation.
    raise UserError(f"--workdir={workdir} holds a checkpoint at step {saved[-1]}, past the last step of this "
                    f"length ({task.schedule.num_steps}); allowed: --num_epochs or --num_steps that reach step "
                    f"{saved[-1]}, or a fresh --workdir")
  if saved:  # Checkpoints of another model (config.json edited by hand) are refused before the workdir is touched;
    # from their metadata, so that the loop's restore stays the only one.
    checkpointing.check_settings_fit(checkpoints, jax.eval_shape(task.init_state, jax.random.key(0)))
  with workdir_lib.run_lock(workdir):
    workdir_lib.record(workdir, settings, may_change, flags_text, defaults)
    return loop.train(task, workdir, config.seed, mesh)


def open_run(family, config, workdir, step=None, providers=lambda operation: []):
  """The `Run` of `workdir` at checkpoint `step` (None: the best-validation checkpoint of a run that selects
  on a validation split, else the newest that restores)."""
  family.validate(config)  # A refusal holds when a run opens too (config.json may have been edited by hand).
  mesh = prepared_mesh()
  task = family.make_task(config, workdir, mesh)
  abstract = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=parallel.replicated(mesh)),
      jax.eval_shape(task.init_state, jax.random.key(0)))
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                                            selecting=task.selection is not None)
  try:
    if step is None and task.selection is not None:
      step = checkpointer.best_step()
    restored = checkpointer.restore(abstract, step, set_aside=False)  # Without the lock: touch nothing.
  finally:
    checkpointer.close()
  if restored is None:
    raise UserError(f"--workdir={workdir} has no checkpoint yet; allowed: a run that has saved one")
  state, progress = restored
  run = Run(workdir, family.NAME, config, state, progress, task, providers)
  if set(run.operations) != set(family.OPERATIONS):  # The declared list names other families' runs' abilities.
    raise RuntimeError(f"the {family.NAME} family declares OPERATIONS {sorted(family.OPERATIONS)} but its task "
                       f"offers {sorted(run.operations)}")
  return run


class Run:
  """A trained run: `config`, `state` (and `params`), `step`, `rows` of metrics.jsonl, `dataset`, and the
  family's operations. Asked for an operation its family lacks, it raises UserError naming the families
  that have it."""

  def __init__(self, workdir, family, config, state, progress, task, providers):
    self.workdir, self.family, self.config, self.state = workdir, family, config, state
    self.progress = progress
    self.step = int(progress["step"])
    self.dataset = task.dataset
    self._task = task
    self._operations = task.operations(state)
    self._providers = providers

  @property
  def params(self):
    return self.state.params

  @property
  def rows(self):
    return metrics_lib.read_rows(os.path.join(self.workdir, "metrics.jsonl"))

  @property
  def operations(self):
    return tuple(self._operations)

  def _operation(self, name):
    if name not in self._operations:
      others = ", ".join(self._providers(name)) or "none"
      raise UserError(f"this {self.family} run has no {name}; allowed: runs of the families that have it "
                      f"({others})")
    return self._operations[name]

  def _images(self, x, scored=False):
    """`x` checked against the run's images (`image_data.checked_images`); `scored`: for a likelihood, which a
    binarising run defines on bits only."""
    return image_data.checked_images(x, self.dataset.image_shape,
                                     binary=scored and getattr(self.config, "binarization", "none") != "none")

  def _seed(self, seed):
    return self.config.seed if seed is None else _counted(seed, "seed", minimum=0, maximum=config_lib.MAX_SEED,
                                                          what="a seed")

  def sample(self, n, seed=None, labels=None):
    """n samples in data space; seed None: the run's own seed, which reproduces samples.npy."""
    operation = self._operation("sample")
    return operation(_counted(n, "n", what="the number of samples"), self._seed(seed), labels)

  def encode(self, x, labels=None):
    operation = self._operation("encode")
    return operation(self._images(x), labels)

  def decode(self, z, labels=None):
    return self._operation("decode")(z, labels)

  def reconstruct(self, x, labels=None):
    operation = self._operation("reconstruct")
    return operation(self._images(x), labels)

  def log_likelihood(self, x, k=5000, labels=None, seed=None):
    operation = self._operation("log_likelihood")
    return operation(self._images(x, scored=True), _counted(k, "k", what="importance samples per image"), labels,
                     self._seed(seed))

  def test_log_likelihood(self, k=5000):
    operation = self._operation("test_log_likelihood")
    return operation(_counted(k, "k", what="importance samples per image"))

  def append_test_row(self, metrics, started):
    """Appends a test row for this checkpoint to metrics.jsonl under the run lock; returns (row, appended).

    `wall_time` is the run's training time at the checkpoint plus the time since `started`. A row of the same
    metric names at the same step (and the same `iwae_k`) is already there when `appended` is False.
    """
    row = {"step": self.step, "examples_seen": int(self.progress["examples_seen"]), "split": "test",
           "wall_time": round(float(self.progress["wall_time"]) + time.time() - started, 3)} | metrics
    with workdir_lib.run_lock(self.workdir):
      return row, _append(self.workdir, row, self._task.identity_keys)


def _counted(value, name, minimum=1, maximum=None, what="a count"):
  """`value` as an int when it is a whole number in [minimum, maximum]; else one line naming it."""
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum
      or (maximum is not None and value > maximum)):
    bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    raise UserError(f"{name}={value!r}; allowed: an integer {bounds} ({what})")
  return int(value)


def _append(workdir, row, identity_keys=()):
  """Appends `row` (the caller holds the run lock); True if it was written, False if already there."""
  writer = metrics_lib.MetricWriter(workdir, enabled=parallel.is_main_process(), identity_keys=identity_keys)
  try:
    return writer.write(row)
  finally:
    writer.close()


def append_after_last_row(workdir, metrics):
  """Appends `metrics` as a test row at the step of the workdir's last row, under the run lock (for scores
  of a run's samples computed afterwards); returns (row, appended) as `Run.append_test_row` does."""
  if not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir} is not a directory; allowed: a run's workdir (an existing directory)")
  with workdir_lib.run_lock(workdir):
    rows = metrics_lib.read_rows(os.path.join(workdir, "metrics.jsonl"))
    last = rows[-1] if rows else {}
    row = {"step": int(last.get("step", 0)), "examples_seen": int(last.get("examples_seen", 0)),
           "split": "test", "wall_time": float(last.get("wall_time", 0.0))} | metrics
    return row, _append(workdir, row)
