"""The training loop every model family shares: dispatch, metrics, evaluation, checkpoints, resume, signals.

A family (VAE, CVAE, autoencoder, GAN, mixture) describes itself as a `Task`: how to initialise its state,
its pure step `update(state, batch, key) -> (state, metrics)`, how a batch is formed on the device from the
resident data, how it evaluates, and what a trained state can do (`operations`, for `load_run`). The loop
owns everything else, so every family gets exact resume, data parallelism and the workdir contract for free.

Determinism is what makes resume exact: the key for step t is fold_in(train_key, t) and the data order of
epoch e is a permutation drawn from fold_in(data_key, e), so the whole run is a function of (seed, step)
and a restored state replays bit-identically. Dispatch sizes are a function of the step too (see
`_dispatch_plan`), so a resumed run also compiles and executes the same programs.
"""

import contextlib
import dataclasses
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
from absl import logging

from gen_jax import parallel, salts
from gen_jax.errors import UserError
from gen_jax.runtime import checkpointing, metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When things happen, in steps; `batch_size` is the global batch."""
  num_steps: int
  steps_per_epoch: int
  batch_size: int
  log_every_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int
  keep_checkpoints: int = 3
  steps_per_dispatch: int = 32
  profile_start_step: int = 0
  profile_steps: int = 0  # 0: no trace.

  @classmethod
  def from_config(cls, config, steps_per_epoch, examples_per_step=None):
    """The schedule of a `config.TrainingConfig`: evaluations and checkpoints default to once an epoch.

    `examples_per_step` is what one loop step consumes (the GAN's n_critic real batches); default the batch.
    """
    return cls(num_steps=config.num_steps or config.num_epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
               batch_size=examples_per_step or config.batch_size, log_every_steps=config.log_every_steps,
               eval_every_steps=config.eval_every_steps or steps_per_epoch,
               checkpoint_every_steps=config.checkpoint_every_steps or steps_per_epoch,
               keep_checkpoints=config.keep_checkpoints, steps_per_dispatch=config.steps_per_dispatch,
               profile_start_step=config.profile_start_step, profile_steps=config.profile_steps)


def no_operations(state):
  del state
  return {}


@dataclasses.dataclass(frozen=True)
class Selection:
  """Model selection on a validation split, with early stopping.

  At every evaluation the loop writes a `validation` row of `validate(state)` (instead of a test row) and
  saves a checkpoint ranked by its `metric` (higher is better); orbax keeps the best one beside the latest.
  Training stops early by `early_stopping_update`'s rule with `patience` and `start_step`. At the end the
  best-validation state is restored and gets the run's test row (with the family's final evaluation; a rerun
  asking for another final evaluation adds one), samples.npy, and is what `load_run` opens.
  """
  validate: Callable[[Any], dict]
  metric: str
  patience: int = 0  # Evaluations without improvement before stopping; 0: never stop early.
  start_step: int = 0  # Evaluations before this step never count against the patience (KL warm-up).


def early_stopping_update(record, step, value, patience, start_step):
  """(record, stop) after validation `value` at `step`; record = {best, best_step, since_best} ({} at first).

  The VampPrior and Exemplar-VAE authors' rule: a strictly better value resets the count; otherwise it grows,
  except before `start_step` (their KL warm-up), where it stays 0; stop once it exceeds `patience`. A NaN is
  never better, and any number but −inf is better than a NaN: values compare by `checkpointing.validation_rank`,
  as orbax ranks the checkpoints, so that it keeps the one this rule picks (of equal ranks, the earlier).
  """
  rank = checkpointing.validation_rank
  if not record or rank(value) > rank(record["best"]):
    record = {"best": float(value), "best_step": int(step), "since_best": 0}
  else:
    record = dict(record, since_best=record["since_best"] + 1 if step >= start_step else 0)
  return record, patience > 0 and record["since_best"] > patience


@dataclasses.dataclass(frozen=True)
class Task:
  """What a model family hands the loop.

  init_state(key) -> state: an unsharded pytree; its `step` field counts updates.
  update(state, batch, key) -> (state, metrics): one optimisation step, pure; metrics include `loss`.
  make_batch(data, step_input, key) -> batch: forms one batch on the device (gather, scale, binarise).
  data: pytree of host arrays placed once, replicated, on every device (or None for sampled toy data).
  step_inputs(first_step, count) -> host array (count, ...): the per-step input, e.g. example indices;
    its axis 1 (the batch axis), if any, is sharded over devices.
  evaluate(state) -> dict of test metrics over the whole test split.
  final_evaluate(state) -> dict of metrics added to the run's last test row (the k = 5000 bound, say).
  selection: model selection on a validation split (`Selection`), or None: test rows at every evaluation.
  schedule: when things happen (`Schedule.from_config`).
  on_evaluation(state, step): figures per evaluation (main process only).
  finalize(state): end-of-run outputs such as samples.npy; must be idempotent (it reruns on resume).
  operations(state) -> {name: function}: what a trained state offers `load_run` (sample, encode, ...).
  dataset: the loaded data (image splits or the toy mixture), for tools that open the run.
  headline: the train-row metric the terminal line shows.
  identity_keys: row values that tell apart rows with the same metric names (evaluations of one
    checkpoint with two k's), so that a resumed run never writes a row twice.
  final_row_identity: the identity-key values of the final evaluation's row ({"iwae_k": 5000}); a rerun of a
    finished run without a test row of these values at the model's step (a new --final_iwae_k) writes one.
  """
  init_state: Callable[[jax.Array], Any]
  update: Callable[..., Any]
  make_batch: Callable[..., Any]
  data: Any
  step_inputs: Callable[[int, int], np.ndarray]
  evaluate: Callable[[Any], dict]
  schedule: Schedule
  on_evaluation: Callable[[Any, int], None] = lambda state, step: None
  finalize: Callable[[Any], None] = lambda state: None
  operations: Callable[[Any], dict] = no_operations
  dataset: Any = None
  headline: str = "loss"
  identity_keys: tuple = ()
  final_evaluate: Callable[[Any], dict] = lambda state: {}
  final_row_identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  selection: Optional[Selection] = None


class Preempted(Exception):
  """SIGTERM/SIGINT/SIGHUP stopped the run. Carries the exit status and a line: where it stopped, what is saved and
  how to go on."""

  def __init__(self, signal_number, where_and_how):
    self.exit_code = 128 + signal_number
    super().__init__(f"stopped by {signal.Signals(signal_number).name} {where_and_how}")


class _SignalArrived(BaseException):
  """Raised by _StopAtOnce's handler; a BaseException (as KeyboardInterrupt is), so that no `except
  Exception` in library code (JAX's compilation cache, say) can swallow the stop."""

  def __init__(self, signal_number):
    super().__init__(signal_number)
    self.signal_number = signal_number


class TrainingDiverged(UserError):
  """A loss or metric became NaN or infinite; the run stops before saving the bad state."""


class _StepProfiler:
  """A jax.profiler trace of the training steps in [profile_start_step, + profile_steps), widened to whole
  dispatches (the trace starts and stops between them), by process 0 (which alone writes the workdir) into
  `log_dir`, where TensorBoard's profile plugin looks (<log_dir>/plugins/profile/<time>/: its .xplane.pb, and a
  perfetto_trace.json.gz for ui.perfetto.dev). A resumed run traces
  what is left of the window; a run that trains no step of it says so on stderr."""

  def __init__(self, schedule, log_dir, enabled):
    self.start, self.end = schedule.profile_start_step, schedule.profile_start_step + schedule.profile_steps
    self.enabled = enabled and schedule.profile_steps > 0
    self.log_dir = log_dir
    self.traced_from = None  # The step the running trace started at.
    self.traced = False

  def before_dispatch(self, step, count):
    if self.enabled and self.traced_from is None and step < self.end and step + count > self.start:
      jax.profiler.start_trace(self.log_dir, create_perfetto_trace=True)  # Also a file Perfetto's UI opens.
      self.traced_from = step

  def after_dispatch(self, step, state):
    if self.traced_from is not None and step >= self.end:
      self._stop(step, state)

  def _stop(self, step, state):
    jax.block_until_ready(state)  # Dispatch is asynchronous: the traced steps must have run.
    jax.profiler.stop_trace()
    print(f"traced the training steps from step {self.traced_from} to step {step} into "
          f"{os.path.join(self.log_dir, 'plugins', 'profile')}", flush=True)
    self.traced_from, self.traced = None, True

  def __enter__(self):
    return self

  def __exit__(self, error_type, *exc):
    """Training failed (its exception says how): a trace still running ends without a word."""
    if error_type is not None and self.traced_from is not None:
      self.traced_from = None
      with contextlib.suppress(Exception):
        jax.profiler.stop_trace()

  def finish(self, step, state):
    """At the end of training (the run's last step, or a stop): ends a trace still running."""
    if self.traced_from is not None:
      self._stop(step, state)
    elif self.enabled and not self.traced:
      print(f"no trace: this run trained no step in --profile_start_step={self.start} "
            f"--profile_steps={self.end - self.start} (it trained up to step {step})", file=sys.stderr, flush=True)


class _StopSignals:
  """Turns SIGTERM/SIGINT/SIGHUP into a flag the loop checks between dispatches, so the stop is clean.

  SIGHUP (the terminal closed, an ssh session dropped) would otherwise end the run where it stands, losing
  the steps since the last checkpoint. A SIGHUP ignored at start (`nohup`) stays ignored.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for number in self.SIGNALS:
      if number == signal.SIGHUP and signal.getsignal(number) == signal.SIG_IGN:
        continue
      try:
        self._previous[number] = signal.signal(number, self._handle)
      except ValueError:  # Not the main thread (e.g. in a test harness): leave signals alone.
        pass
    return self

  def _handle(self, number, frame):
    del frame
    self.received = number

  def __exit__(self, *exc):
    for number, handler in self._previous.items():
      signal.signal(number, handler)


class _StopAtOnce(_StopSignals):
  """SIGTERM/SIGINT/SIGHUP raise _SignalArrived where Python next runs: for the final evaluation (k = 5000 on the
  test split can take many minutes, so waiting for its end is no use) and for the work after training, which
  a rerun of the same command redoes. Signals are per process: on several hosts each must receive one."""

  def _handle(self, number, frame):
    del frame
    raise _SignalArrived(number)


@contextlib.contextmanager
def _stopping_at_once(checkpointer, writer, where_and_how, received=None):
  """Runs its body under _StopAtOnce; a signal closes the checkpointer (letting a save in flight finish) and
  the writer, and raises Preempted with `where_and_how`. `received`: a signal the loop's _StopSignals caught
  already (during the dispatch before), which stops it before the body starts."""
  try:
    with _StopAtOnce():
      if received is not None:
        raise _SignalArrived(received)
      yield
  except _SignalArrived as arrived:
    checkpointer.close()
    writer.close()
    raise Preempted(arrived.signal_number, where_and_how) from None


def _final_metrics(task, state, step):
  """The test metrics of the run's model: the family's evaluation and its final one (the k = 5000 bound)."""
  _inject_fault("sigterm_final", step)
  return task.evaluate(state) | task.final_evaluate(state)


def _inject_fault(phase, step):
  """Test hook: GEN_JAX_FAULT="phase:step" kills (or signals) this process at that point.

  Phases: `step` (after the dispatch that reaches the step), `save` (while that step's checkpoint is
  being written), `eval` (during that step's evaluation, before its test row), `sigterm` and `sighup` (that
  signal to itself after the dispatch), `sigterm_final` (a SIGTERM as the final evaluation of the run's model
  starts: the last step's, or the best-validation step's with model selection).
  The resume tests use it to interrupt runs at exact, repeatable moments.
  """
  fault = os.environ.get("GEN_JAX_FAULT")
  if fault and fault == f"{phase}:{step}":
    os.kill(os.getpid(), _FAULT_SIGNALS.get(phase, signal.SIGKILL))


# The phases that send a stop signal; every other phase kills.
_FAULT_SIGNALS = {"sigterm": signal.SIGTERM, "sighup": signal.SIGHUP, "sigterm_final": signal.SIGTERM}


def _dispatch_plan(step, schedule, event_steps):
  """Steps to run in the next dispatch: up to `steps_per_dispatch`, never past the next event.

  Below a full dispatch the largest power of two that fits is used, which bounds the number of compiled
  scan lengths by log2(steps_per_dispatch) and makes the plan a function of the step alone.
  """
  next_event = min(s for s in event_steps(step))
  remaining = min(next_event - step, schedule.steps_per_dispatch)
  if remaining == schedule.steps_per_dispatch:
    return remaining
  return 1 << (remaining.bit_length() - 1)


def _is_due(step, every):
  return every > 0 and step % every == 0


def _check_finite(step_metrics, first_step):
  """Raises TrainingDiverged naming the first step and metric that is not finite."""
  for offset in range(len(step_metrics["loss"])):
    for name, values in step_metrics.items():
      if not np.isfinite(values[offset]):
        raise TrainingDiverged(f"{name} became {values[offset]} at step {first_step + offset + 1}; stopping "
                               "(allowed: finite values; try a lower --learning_rate)")


def run_keys(seed):
  """(init_key, train_key) of a run at `seed`: its initial parameters' key, and the key that every step's keys
  are folded from."""
  return jax.random.split(jax.random.key(seed))


def training_step(make_batch, update, train_key):
  """step(state, data, step_input) -> (state, metrics): one step as every run takes it, its keys from
  fold_in(train_key, state.step), so that a resumed run, or a seed of gan_seeds' vmapped ones, draws them alike."""

  def step(state, data, step_input):
    data_key, update_key = jax.random.split(jax.random.fold_in(train_key, state.step))
    return update(state, make_batch(data, step_input, data_key), update_key)

  return step


def compile_steps(task, train_key):
  """run_steps(state, data, step_inputs) -> (state, per-step metrics): len(step_inputs) steps, one dispatch.

  The steps run inside `lax.scan`, so Python dispatch overhead is paid once per dispatch; the state is
  donated so parameters and optimizer state are updated in place.
  """
  step = training_step(task.make_batch, task.update, train_key)

  def run_steps(state, data, step_inputs):
    def body(state, step_input):
      return step(state, data, step_input)
    if step_inputs.shape[0] == 1:
      # One step needs no loop, and XLA's CPU convolutions are pathologically slow inside one (a DCGAN
      # step ran ~8x slower in a scan of length 1; JAX issue #12868), so a single step runs as straight-line
      # code.
      state, metrics = body(state, step_inputs[0])
      return state, jax.tree.map(lambda value: value[None], metrics)
    return jax.lax.scan(body, state, step_inputs)

  return jax.jit(run_steps, donate_argnums=(0,))


def _mean_rows(step_metrics):
  return {name: float(np.mean(values)) for name, values in step_metrics.items()}


class WriteFailed(UserError):
  """An I/O error stopped the run (a full disk, a failing device, a read-only file system, a permission)."""


def train(task, workdir, seed, mesh):
  """Runs (or resumes) training to `task.schedule.num_steps`; returns the final state.

  An OSError while writing the workdir (ENOSPC, EIO, EROFS, EACCES ...) stops the run with one line: what
  failed, at which step, the newest complete checkpoint (orbax writes into a temporary folder and renames it
  when complete, so a failed save never damages an earlier one) and how to resume.
  """
  where = {"step": 0, "checkpointer": None}
  try:
    return _train(task, workdir, seed, mesh, where)
  except OSError as error:
    complete = []
    try:
      if where["checkpointer"]:
        # Let a save still in flight finish (or fail) first: otherwise it would finalise its step behind the
        # back of the next run on this workdir, which may be saving that same step (orbax: "already exists").
        try:
          where["checkpointer"].close()
        except Exception:
          pass
      # The disk, not orbax's list: a save that starts drops from that list the steps it would delete once
      # done, so after a failed save it can be empty while the older checkpoint is still there, complete.
      complete = checkpointing.saved_steps(os.path.join(workdir, "checkpoints"))
    except Exception:  # The file system that just failed may fail again; the message still goes out.
      pass
    intact = (f"the checkpoint at step {complete[-1]} is intact" if complete else "no checkpoint is complete yet")
    failed = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
    raise WriteFailed(f"an I/O error stopped the run at step {where['step']}: {failed}; {intact}; resume by "
                      "re-running the same command with the same --workdir once the cause is fixed") from None


def _train(task, workdir, seed, mesh, where):
  schedule = task.schedule
  main = parallel.is_main_process()
  selection = task.selection
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), schedule.keep_checkpoints,
                                            selecting=selection is not None)
  where["checkpointer"] = checkpointer
  init_key, train_key = run_keys(seed)

  state = parallel.replicate_tree(task.init_state(init_key), mesh)
  abstract_state = checkpointing.abstract_like(state)
  restored = checkpointer.restore(abstract_state)
  step, wall_time_before = 0, 0.0
  selection_record, stopped_early = {}, False
  if restored is not None:
    state, progress = restored
    step, wall_time_before = int(progress["step"]), float(progress["wall_time"])
    selection_record, stopped_early = progress.get("selection", {}), bool(progress.get("stopped_early"))
    where["step"] = step
    carried = {name: np.asarray(values, np.float32) for name, values in progress["pending_metrics"].items()}
    expected_epoch = step // schedule.steps_per_epoch
    if int(progress["epoch"]) != expected_epoch:
      raise UserError(f"checkpoint at step {step} is from epoch {progress['epoch']} but --batch_size and the "
                      f"data give epoch {expected_epoch}; allowed: the run's own data settings")
  # A run has ended when it reached its last step or stopped early; with the final evaluation of its model (the
  # best-validation one, with selection) in metrics.jsonl, a rerun has nothing to add: it writes no row (so the
  # writer starts no TensorBoard file) and only redoes the final files (`finalize`, idempotent), which a stop
  # during the last run's end may have left undone.
  writer = metrics_lib.MetricWriter(workdir, enabled=main, identity_keys=task.identity_keys)
  ended = restored is not None and (step >= schedule.num_steps or stopped_early)
  model_step = selection_record.get("best_step", step) if selection is not None else step
  finished = ended and parallel.main_process_says(writer.has_row("test", model_step, **task.final_row_identity))
  if restored is not None:
    logging.info("resumed from step %d", step)
    if main:
      stop_note = " (stopped early)" if stopped_early else ""
      print(f"the run in {workdir} has finished at step {step}{stop_note}; nothing to train or evaluate" if finished
            else f"training ended at step {step}{stop_note}; evaluating the model of step {model_step}" if ended
            else f"resuming from the checkpoint at step {step}", flush=True)
  data = None if task.data is None else parallel.replicate_tree(task.data, mesh)

  run_steps = compile_steps(task, train_key)

  def event_steps(current):
    candidates = [schedule.num_steps]
    for every in (schedule.log_every_steps, schedule.eval_every_steps, schedule.checkpoint_every_steps):
      if every > 0:
        candidates.append((current // every + 1) * every)
    return candidates

  def progress_record(at_step):
    # Per-step metrics since the last train row travel with the checkpoint, so that a run resumed from
    # a step between two train rows writes the same next row as an uninterrupted run.
    carried = {name: np.asarray(values).tolist() for name, values in pending[0].items()} if pending else {}
    return {"step": at_step, "pending_metrics": carried, "pending_seconds": interval_seconds if pending else 0.0,
            "epoch": at_step // schedule.steps_per_epoch,
            "offset_in_epoch": (at_step % schedule.steps_per_epoch) * schedule.batch_size,
            "examples_seen": at_step * schedule.batch_size,
            "wall_time": wall_time_before + time.time() - start_time,
            "selection": selection_record, "stopped_early": stopped_early}

  def base_row(at_step, split):
    return {"step": at_step, "examples_seen": at_step * schedule.batch_size, "split": split,
            "wall_time": round(wall_time_before + time.time() - start_time, 3)}

  start_time = time.time()
  pending = [carried] if restored is not None and carried else []
  pending_first_step = step - (len(carried["loss"]) if pending else 0)
  # Training seconds of the pending steps: the next train row's examples/s counts the carried ones too.
  interval_seconds = float(progress.get("pending_seconds", 0.0)) if pending else 0.0
  interval_start = time.time()
  last_saved = step if restored is not None else None
  first_step, save_seconds = step, 0.0  # Time training waited for checkpoint saves (the async part is free).
  sample_input = task.step_inputs(0, 1)
  inputs_sharding = parallel.batch_sharded(mesh, 1) if sample_input.ndim > 1 else parallel.replicated(mesh)

  agreement = parallel.SignalAgreement(mesh)
  profiler = _StepProfiler(schedule, os.path.join(workdir, "tensorboard"), enabled=main)
  with _StopSignals() as stop, profiler:
    while step < schedule.num_steps and not stopped_early:
      count = _dispatch_plan(step, schedule, event_steps)
      profiler.before_dispatch(step, count)  # Before the inputs: a traced dispatch includes their transfer.
      step_inputs = parallel.global_array(task.step_inputs(step, count), inputs_sharding)
      state, step_metrics = run_steps(state, data, step_inputs)
      pending.append(step_metrics)
      step += count
      where["step"] = step
      profiler.after_dispatch(step, state)
      _inject_fault("step", step)
      _inject_fault("sigterm", step)
      _inject_fault("sighup", step)
      received = agreement.update(stop.received)  # One answer on every process (see SignalAgreement).

      final_step = step == schedule.num_steps
      logging_due = _is_due(step, schedule.log_every_steps) or final_step
      evaluation_due = _is_due(step, schedule.eval_every_steps) or final_step
      checkpoint_due = _is_due(step, schedule.checkpoint_every_steps) or final_step
      if logging_due or evaluation_due or checkpoint_due or received:
        # Fetching the metrics synchronises; that is also when non-finite values are caught, before any
        # checkpoint could store a diverged state.
        fetched = jax.device_get(pending)
        merged = {name: np.concatenate([np.atleast_1d(m[name]) for m in fetched]) for name in fetched[0]}
        _check_finite(merged, pending_first_step)
        if logging_due:
          interval_seconds += time.time() - interval_start
          row = base_row(step, "train") | _mean_rows(merged)
          row["examples_per_sec"] = round(len(merged["loss"]) * schedule.batch_size / interval_seconds, 1)
          writer.write(row)
          _log_line(row, schedule, task.headline)
          pending, pending_first_step, interval_seconds = [], step, 0.0
        else:
          interval_seconds += time.time() - interval_start
          pending = [merged]
        selection_value = None
        if evaluation_due:
          split = "test" if selection is None else "validation"
          if selection is None and final_step:
            # The step is saved only after its test row, so a stop here resumes from the last checkpoint and
            # trains to this step again: exactly the rows of an uninterrupted run, whatever --num_steps then.
            resume_from = f"step {last_saved}" if last_saved else "the start"
            with _stopping_at_once(checkpointer, writer, f"during the final evaluation at step {step}, before "
                                   "its checkpoint; re-running the same command with the same --workdir resumes "
                                   f"from {resume_from} and evaluates again", received):
              split_metrics = _final_metrics(task, state, step)
          elif selection is None:
            split_metrics = task.evaluate(state)
          else:
            split_metrics = selection.validate(state)
            selection_value = split_metrics[selection.metric]
            selection_record, stopped_early = early_stopping_update(
                selection_record, step, selection_value, selection.patience, selection.start_step)
          _inject_fault("eval", step)
          writer.write(base_row(step, split) | split_metrics)
          logging.info("step %d %s %s", step, split, _format_metrics(split_metrics))
          if main:
            print(f"step {step} {split}: {_format_metrics(split_metrics)}", flush=True)  # What the run is for.
            task.on_evaluation(state, step)
        # With selection every validated state is saved, ranked, so that the best one can be restored.
        if checkpoint_due or received or selection_value is not None:
          save_start = time.time()
          checkpointer.save(step, state, progress_record(step), selection_value)
          save_seconds += time.time() - save_start
          _inject_fault("save", step)
          last_saved = step
        interval_start = time.time()
      if received:
        profiler.finish(step, state)
        checkpointer.close()
        writer.close()
        raise Preempted(received, f"at step {step}; checkpoint saved; resume by re-running the same "
                        "command with the same --workdir")

  profiler.finish(step, state)
  # Training is over: a signal from here on stops at once, and the same command redoes what is left (the
  # best checkpoint's evaluation, the final files) without training.
  with _stopping_at_once(checkpointer, writer, f"after training ended at step {step}, which is saved; "
                         "re-running the same command with the same --workdir finishes the run without training"):
    if last_saved != step:
      checkpointer.save(step, state, progress_record(step))
    save_start = time.time()
    checkpointer.wait()
    save_seconds += time.time() - save_start
    if main and step > first_step:
      total = time.time() - start_time
      stop_note = f" (stopped early: no better validation {selection.metric} since step " \
                  f"{selection_record['best_step']})" if stopped_early else ""
      print(f"trained steps {first_step}-{step} in {total:.1f}s{stop_note}; checkpoint saves held training for "
            f"{save_seconds:.2f}s ({save_seconds / total:.1%})", flush=True)
    if finished:
      if model_step != step:
        state, _ = checkpointer.restore(abstract_state, step=model_step)  # The model finalize writes from.
    elif selection is None:
      # Written in the loop, unless this rerun of a finished run asks for another final evaluation.
      test_metrics = _write_final_test_row(task, state, step, writer, base_row)
      if test_metrics is not None:
        logging.info("step %d test %s", step, _format_metrics(test_metrics))
        if main:
          print(f"step {step} test: {_format_metrics(test_metrics)}", flush=True)
    elif selection_record:
      state = _selected_state(task, state, step, selection_record["best_step"], checkpointer, abstract_state,
                              writer, base_row)
    if main:
      task.finalize(state)
  checkpointer.close()
  writer.close()
  return state


def _write_final_test_row(task, state, at_step, writer, base_row):
  """Writes the test row of the run's model with the family's final evaluation, unless the file holds one
  with the final evaluation's identity (a rerun of a finished run); returns its metrics, or None."""
  if parallel.main_process_says(writer.has_row("test", at_step, **task.final_row_identity)):
    return None
  test_metrics = _final_metrics(task, state, at_step)
  writer.write(base_row(at_step, "test") | test_metrics)
  return test_metrics


def _selected_state(task, state, step, best_step, checkpointer, abstract_state, writer, base_row):
  """The best-validation state, restored unless it is the current one, and its test row with the family's
  final evaluation, written once for each final evaluation asked for (_write_final_test_row)."""
  if best_step != step:
    state, _ = checkpointer.restore(abstract_state, step=best_step)
  test_metrics = _write_final_test_row(task, state, best_step, writer, base_row)
  if test_metrics is not None:
    logging.info("step %d test (best validation) %s", best_step, _format_metrics(test_metrics))
    if parallel.is_main_process():
      print(f"best validation {task.selection.metric} at step {best_step}: test "
            f"{_format_metrics(test_metrics)}", flush=True)
  return state


def _format_metrics(values):
  return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _log_line(row, schedule, headline):
  step = row["step"]
  epoch = step / schedule.steps_per_epoch
  remaining = (schedule.num_steps - step) * schedule.batch_size / max(row["examples_per_sec"], 1e-9)
  headline = headline if headline in row else "loss"
  message = (f"epoch {epoch:6.2f}  step {step:7d}  {headline} {row[headline]:10.4f}  "
             f"{row['examples_per_sec']:10.0f} examples/s  ETA {remaining:6.0f}s")
  logging.info(message)
  if parallel.is_main_process():
    print(message, flush=True)


def epoch_permutation_indices(num_examples, batch_size, seed):
  """step_inputs for in-memory data: example indices of each step's batch, shape (count, batch_size).

  Epoch e uses a permutation drawn from fold_in(data_key(seed), e) with the remainder dropped, so the
  indices of any step can be produced without replaying earlier epochs.
  """
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch < 1:
    raise UserError(f"--batch_size={batch_size} exceeds the {num_examples} training examples; allowed: at "
                    f"most {num_examples}")
  data_key = salts.key_for(seed, salts.DATA_ORDER)
  cache = {}

  def permutation(epoch):
    if epoch not in cache:
      cache.clear()  # One epoch at a time is enough; dispatches never span more than two.
      order = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
      cache[epoch] = np.asarray(jax.device_get(order), np.int32)
    return cache[epoch]

  def step_inputs(first_step, count):
    rows = []
    for step in range(first_step, first_step + count):
      epoch, position = divmod(step, steps_per_epoch)
      rows.append(permutation(epoch)[position * batch_size:(position + 1) * batch_size])
    return np.stack(rows)

  return step_inputs, steps_per_epoch
