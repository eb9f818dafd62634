"""The shared training loop on a toy task: data order, dispatch plan, recompiles, metrics rows."""

import json
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from conftest import REPO, assert_one_line_error, assert_user_error, untimed_rows
from gen_jax.errors import UserError
from gen_jax import config as config_lib, parallel
from gen_jax.runtime import checkpointing, loop


def test_epoch_permutations_cover_each_epoch_once_and_do_not_depend_on_how_they_are_asked_for():
  step_inputs, steps_per_epoch = loop.epoch_permutation_indices(num_examples=50, batch_size=8, seed=3)
  assert steps_per_epoch == 6  # The remainder of 2 examples is dropped each epoch.
  all_at_once = step_inputs(0, 18)
  piecewise = np.concatenate([step_inputs(0, 5), step_inputs(5, 7), step_inputs(12, 6)])
  np.testing.assert_array_equal(all_at_once, piecewise)
  for epoch in range(3):
    seen = all_at_once[epoch * 6:(epoch + 1) * 6].ravel()
    assert len(set(seen.tolist())) == 48 and seen.max() < 50
  assert not np.array_equal(all_at_once[:6], all_at_once[6:12])  # A fresh order every epoch.
  again, _ = loop.epoch_permutation_indices(num_examples=50, batch_size=8, seed=3)
  np.testing.assert_array_equal(again(7, 3), all_at_once[7:10])
  with pytest.raises(UserError, match="--batch_size=64"):
    loop.epoch_permutation_indices(num_examples=50, batch_size=64, seed=0)


def test_dispatch_plan_stops_at_every_event_and_uses_few_lengths():
  schedule = loop.Schedule(num_steps=100, steps_per_epoch=7, batch_size=1, log_every_steps=10,
                           eval_every_steps=7, checkpoint_every_steps=25, steps_per_dispatch=8)
  events = {s for s in range(1, 101) if s % 10 == 0 or s % 7 == 0 or s % 25 == 0} | {100}

  def event_steps(current):
    return [100] + [(current // every + 1) * every for every in (10, 7, 25)]

  step, lengths, boundaries = 0, set(), set()
  while step < 100:
    count = loop._dispatch_plan(step, schedule, event_steps)
    lengths.add(count)
    step += count
    boundaries.add(step)
  assert events <= boundaries
  assert lengths <= {8, 4, 2, 1}  # Powers of two below a full dispatch: at most log2(8) + 1 programs.


class _CountingTask:
  """Fits y = 3x by SGD on sampled data; counts how often its step is traced (compiled)."""

  def __init__(self):
    self.traces = 0

  def update(self, state, batch, key):
    del key
    self.traces += 1

    def loss_fn(params):
      return jnp.mean((batch["x"] * params["w"] - batch["y"])**2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}

  def task(self, schedule):
    def make_batch(data, step_input, key):
      del data, step_input
      x = jax.random.normal(key, (16,))
      return {"x": x, "y": 3.0 * x}

    def init_state(key):
      del key
      return train_state.TrainState.create(apply_fn=None, params={"w": jnp.zeros(())}, tx=optax.sgd(0.1))

    return loop.Task(init_state=init_state, update=self.update, make_batch=make_batch, data=None,
                     step_inputs=lambda first, count: np.arange(first, first + count),
                     evaluate=lambda state: {"w": float(state.params["w"])}, schedule=schedule)


def test_loop_compiles_each_dispatch_length_once_and_writes_the_rows(tmp_path):
  counting = _CountingTask()
  schedule = loop.Schedule(num_steps=60, steps_per_epoch=20, batch_size=16, log_every_steps=10,
                           eval_every_steps=20, checkpoint_every_steps=30, steps_per_dispatch=8)
  state = loop.train(counting.task(schedule), str(tmp_path), seed=0, mesh=parallel.make_mesh())
  # Dispatches: 8+2 up to each multiple of 10 -> two lengths, two compilations for 60 steps.
  assert counting.traces == 2
  assert float(state.params["w"]) == pytest.approx(3.0, abs=1e-3)
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["split"], r["step"]) for r in rows] == [
      ("train", 10), ("train", 20), ("test", 20), ("train", 30), ("train", 40), ("test", 40), ("train", 50),
      ("train", 60), ("test", 60)]
  assert rows[-1]["w"] == pytest.approx(3.0, abs=1e-3)
  assert rows[0]["loss"] > rows[-2]["loss"]


def test_a_profile_traces_the_dispatches_of_its_window_and_changes_nothing(tmp_path, capsys):
  """--profile_start_step=5 --profile_steps=4 with dispatches of 4 steps: one trace, over the two dispatches that
  overlap the window [5, 9) (from step 4 to step 12), where TensorBoard's profile plugin looks; the run writes the rows and
  ends at the state of the run without it. A window the run never reaches traces nothing and says so, and a
  start without a length is refused as an unread setting."""
  steps = dict(num_steps=16, steps_per_epoch=8, batch_size=16, log_every_steps=8, eval_every_steps=8,
               checkpoint_every_steps=8, steps_per_dispatch=4)

  def train(name, **profile):
    return loop.train(_CountingTask().task(loop.Schedule(**steps, **profile)), str(tmp_path / name), seed=0,
                      mesh=parallel.make_mesh())

  plain, profiled = train("plain"), train("profiled", profile_start_step=5, profile_steps=4)
  profile_dir = tmp_path / "profiled" / "tensorboard" / "plugins" / "profile"
  assert f"traced the training steps from step 4 to step 12 into {profile_dir}\n" in capsys.readouterr().out
  traces = list(profile_dir.glob("*/*.xplane.pb")) + list(profile_dir.glob("*/perfetto_trace.json.gz"))
  assert len(traces) == 2 and all(trace.stat().st_size > 0 for trace in traces)
  assert float(profiled.params["w"]) == float(plain.params["w"])
  assert untimed_rows(tmp_path / "profiled") == untimed_rows(tmp_path / "plain")

  train("late", profile_start_step=16, profile_steps=4)
  assert ("no trace: this run trained no step in --profile_start_step=16 --profile_steps=4 (it trained up to "
          "step 16)") in capsys.readouterr().err
  assert not (tmp_path / "late" / "tensorboard" / "plugins").exists()
  assert_user_error(lambda: config_lib.validate_common(config_lib.TrainingConfig(profile_start_step=5)),
                    "--profile_steps=0 (no trace) does not read --profile_start_step=5; allowed: "
                    "--profile_start_step=0")


def test_a_checkpoint_between_train_rows_carries_its_pending_steps_and_their_seconds(tmp_path):
  """Steps 9-12 are trained after the row at step 8 and saved at 12: the progress record carries their metrics
  and their training seconds, so that a run resumed there reports examples/s over all eight steps at 16."""
  schedule = loop.Schedule(num_steps=16, steps_per_epoch=4, batch_size=16, log_every_steps=8,
                           eval_every_steps=100, checkpoint_every_steps=4, steps_per_dispatch=4, keep_checkpoints=3)
  loop.train(_CountingTask().task(schedule), str(tmp_path), seed=0, mesh=parallel.make_mesh())
  state = _CountingTask().task(schedule).init_state(jax.random.key(0))
  checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), 3)
  _, progress = checkpointer.restore(checkpointing.abstract_like(state), step=12)
  checkpointer.close()
  assert progress["step"] == 12 and len(progress["pending_metrics"]["loss"]) == 4
  assert progress["pending_seconds"] > 0.0


def _finished_run_task(schedule, calls, selection=False, final_iwae_k=5000):
  """_CountingTask's task recording its evaluations and what `finalize` is handed; with `selection`, a
  validation value that only gets worse, so that early stopping ends the run at its third evaluation."""
  def count(name, metrics):
    calls.append(name)
    return metrics

  task = _CountingTask().task(schedule)
  validation = loop.Selection(validate=lambda state: count("validate", {"v": -float(state.step)}), metric="v",
                              patience=1) if selection else None
  return loop.Task(**{**vars(task), "evaluate": lambda state: count("evaluate", {"w": float(state.params["w"])}),
                      "final_evaluate": lambda state: count("final_evaluate", {"iwae_k": final_iwae_k}),
                      "final_row_identity": {"iwae_k": final_iwae_k}, "identity_keys": ("iwae_k",),
                      "finalize": lambda state: calls.append(("finalize", int(state.step))), "selection": validation})


@pytest.mark.parametrize("selection", [False, True])
def test_a_finished_run_run_again_writes_nothing_and_says_so(tmp_path, capsys, selection):
  """Ended at its last step, or stopped early (at 60, the best model at 20): the rerun evaluates nothing, adds
  no row and no TensorBoard event file, and finalizes the run's model again (idempotent, for a stop during the
  last run's end). A new final evaluation (another k) is still added, once."""
  schedule = loop.Schedule(num_steps=100, steps_per_epoch=20, batch_size=16, log_every_steps=10,
                           eval_every_steps=20, checkpoint_every_steps=20, steps_per_dispatch=8)
  calls = []
  loop.train(_finished_run_task(schedule, calls, selection), str(tmp_path), seed=0, mesh=parallel.make_mesh())
  model_step, end_step = (20, 60) if selection else (100, 100)
  assert calls[-1] == ("finalize", model_step)
  rows, event_files = (tmp_path / "metrics.jsonl").read_text(), sorted(tmp_path.joinpath("tensorboard").iterdir())
  capsys.readouterr()

  calls.clear()
  loop.train(_finished_run_task(schedule, calls, selection), str(tmp_path), seed=0, mesh=parallel.make_mesh())
  assert calls == [("finalize", model_step)]
  assert capsys.readouterr().out.splitlines() == [f"the run in {tmp_path} has finished at step {end_step}"
                                                  f"{' (stopped early)' if selection else ''}; nothing to train or "
                                                  "evaluate"]
  assert (tmp_path / "metrics.jsonl").read_text() == rows
  assert sorted(tmp_path.joinpath("tensorboard").iterdir()) == event_files

  calls.clear()
  loop.train(_finished_run_task(schedule, calls, selection, final_iwae_k=10), str(tmp_path), seed=0,
             mesh=parallel.make_mesh())
  assert calls == ["evaluate", "final_evaluate", ("finalize", model_step)]
  added = (tmp_path / "metrics.jsonl").read_text()[len(rows):].splitlines()
  assert [(row["split"], row["step"], row["iwae_k"]) for row in map(json.loads, added)] == [("test", model_step, 10)]


def test_plot_curves_refuses_a_metric_no_run_has_naming_those_they_have(tmp_path):
  """A typo, or a bound no run computed, would draw an empty plot and exit 0; it is one line and no file."""
  rows = [{"step": 4, "examples_seen": 64, "split": "train", "wall_time": 1.0, "examples_per_sec": 64.0,
           "elbo": -300.0, "recon": -290.0, "kl": 10.0},
          {"step": 4, "examples_seen": 64, "split": "test", "wall_time": 1.5, "elbo": -310.0, "recon": -299.0,
           "kl": 11.0, "iwae_k": 5000, "log_likelihood": -305.0}]
  for name, run_rows in (("a", rows[:1]), ("b", rows)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in run_rows))
  output = tmp_path / "curves.png"

  def plot_curves(names, metric):
    workdirs = ",".join(str(tmp_path / name) for name in names)
    return subprocess.run([sys.executable, "scripts/plot_curves.py", f"--workdirs={workdirs}", f"--metric={metric}",
                           f"--output={output}"], cwd=REPO, capture_output=True, text=True, timeout=120)

  # Through the command line (the script's module defines absl flags, so it cannot be loaded beside another
  # script's in one test process): a bound none of the runs computed, then one run has it.
  result = plot_curves("a", "log_likelihood")
  assert result.returncode == 2
  assert_one_line_error(result, "--metric=log_likelihood is in none of the runs", "a metric they have (elbo, kl, "
                        "recon)")
  assert not output.exists()
  result = plot_curves("ab", "log_likelihood")
  assert result.returncode == 0 and output.stat().st_size > 0, result.stderr


_PAGE_FAULTS_OF_REUSED_BLOCKS = """
import ctypes, resource, sys, threading
from gen_jax.runtime import host_memory
kept = host_memory.keep_freed_memory(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]

def last_round_faults(who, sizes):  # A dispatch's buffers: allocated, written, freed; the last round counts.
  for _ in range(3):
    before = resource.getrusage(who).ru_minflt
    blocks = [libc.malloc(size) for size in sizes]
    for block, size in zip(blocks, sizes):
      ctypes.memset(block, 1, size)
    for block in blocks:
      libc.free(block)
  return resource.getrusage(who).ru_minflt - before

main_heap = last_round_faults(resource.RUSAGE_SELF, [64 << 20])
thread_arena = []  # Another thread gets an arena of its own; 90 MiB take two of its 64 MiB heaps.
worker = threading.Thread(target=lambda: thread_arena.append(last_round_faults(resource.RUSAGE_THREAD, [30 << 20] * 3)))
worker.start()
worker.join()
print(kept, main_heap, thread_arena[0])
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_on_the_cpu_freed_host_memory_is_reused_without_page_faults():
  """XLA:CPU frees each dispatch's buffers (~90 MB for the DCGAN step) and allocates them again at the next;
  by default glibc returns such blocks to the kernel and every page faults back in (16,384 for 64 MiB), both
  in the main heap and in another thread's arena (7,680 for the 30 MiB in its second heap)."""
  def last_rounds(platform_name):
    output = subprocess.run([sys.executable, "-c", _PAGE_FAULTS_OF_REUSED_BLOCKS, platform_name], check=True,
                            capture_output=True, text=True).stdout.split()
    return output[0] == "True", int(output[1]), int(output[2])

  kept, main_heap, thread_arena = last_rounds("cpu")
  assert kept and main_heap < 100 and thread_arena < 100
  kept, main_heap, thread_arena = last_rounds("gpu")  # Device memory is not the host's: malloc stays as it is.
  assert not kept and main_heap > 10_000 and thread_arena > 5_000
