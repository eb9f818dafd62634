"""Shared test helpers: running an experiment the way a user does, as a subprocess.

Subprocess runs are the real check of the command-line contract (exit status, one-line errors, no
traceback), but each costs a JAX start-up, so tests use them only where that contract is the point and
run independent ones concurrently.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# JAX's persistent compilation cache, shared by this process and every experiment it starts: the suite
# compiles the same tiny programs in many runs, and a cache hit costs milliseconds instead of seconds.
# Set before any test module imports jax (conftest is imported first), inherited by subprocesses.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# The suite's programs are tiny and run a few steps, so compiling them dominates its time, and most of a
# compilation is LLVM optimising the generated code. Without that optimisation (XLA's own graph passes, which
# decide what is computed, still run) the suite compiles several times faster; the few programs that run
# long enough to notice run a little slower. XLA:CPU's newer fusion emitters (MLIR-based, on by default) cost
# more to compile than its classic loop emitters: turning them off took a cold tiny DCGAN run from 10.0 to
# 6.2 CPU-seconds. Subprocesses get the same flags (start_experiment).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

# A latent-code model (VAE, CVAE, autoencoder) small enough for a subprocess run in a few seconds: 512
# examples, 8 steps an epoch; after the family's flagfile.
TINY_LATENT_CODE_FLAGS = (
    "--num_train_examples=512", "--num_test_examples=200", "--eval_batch_size=100", "--batch_size=64",
    "--hidden_sizes=32", "--latent_dim=4", "--num_samples=16", "--num_images=8", "--log_every_steps=4",
    "--steps_per_dispatch=4")
TINY_VAE_FLAGS = ("--flagfile=experiments/configs/vae_pytorch_example.cfg", *TINY_LATENT_CODE_FLAGS)
# A DCGAN on 64 Fashion-MNIST images with 4 base features: a subprocess run in seconds, no classifier.
TINY_DCGAN_FLAGS = ("--num_train_examples=64", "--num_test_examples=16", "--batch_size=16", "--base_features=4",
                    "--num_images=4", "--score_sample_quality=false")


def load_script(name):
  """scripts/<name>.py as a module, for testing a script's functions without a subprocess."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def experiment_command(module, *flags):
  return [sys.executable, "-m", f"experiments.{module}", *flags]


# Runs a command with SIGHUP at its default action, as in a terminal: a suite started under `nohup` would
# otherwise hand its runs an ignored SIGHUP (ignored signals survive exec; a shell's `trap` cannot undo that).
HANGUP_AT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
                     "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def start_experiment(module, *flags, env=None, stderr=subprocess.PIPE, hangup_at_default=False):
  """Starts `python -m experiments.<module> flags...` from the repository root; returns the Popen (stderr:
  subprocess.STDOUT puts both streams on the one pipe, as `2>&1 |` does; hangup_at_default: SIGHUP ends or
  stops the run as in a terminal, whatever the suite's own SIGHUP is)."""
  # A run gets the suite's XLA flags and the test's own, not any the suite itself was started with.
  full_env = dict(os.environ, **(env or {}))
  full_env["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} {(env or {}).get('XLA_FLAGS', '')}".strip()
  command = experiment_command(module, *flags)
  if hangup_at_default:
    command = [sys.executable, "-c", HANGUP_AT_DEFAULT, *command[1:]]
  return subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def finish(process, timeout=240):
  stdout, stderr = process.communicate(timeout=timeout)
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_experiment(module, *flags, env=None, timeout=240, hangup_at_default=False):
  return finish(start_experiment(module, *flags, env=env, hangup_at_default=hangup_at_default), timeout)


def assert_one_line_error(result, *fragments):
  """Non-zero exit, exactly one line on stderr, no traceback, and the line names each fragment."""
  assert result.returncode != 0, result.stdout
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, result.stderr
  assert "Traceback" not in result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def assert_user_error(function, *fragments):
  """`function()` raises a one-line UserError whose message contains every fragment."""
  from gen_jax.errors import UserError  # Here, not above: conftest sets the XLA flags before gen_jax loads.
  with pytest.raises(UserError) as info:
    function()
  message = str(info.value)
  assert "\n" not in message, message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def numpy_adam(gradients, learning_rate, b1, b2, eps):
  """Kingma & Ba's Algorithm 1 in float64: Adam's updates for a sequence of gradients (the optimizer tests'
  reference)."""
  m = v = 0.0
  updates = []
  for t, g in enumerate(gradients, start=1):
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    updates.append(-learning_rate * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
  return np.array(updates)


# Three steps of gradients that change sign and scale: unlike a constant gradient (whose every Adam step is
# −lr·sign(g) whatever the betas), they make each of Adam's settings change the updates.
CHANGING_GRADIENTS = np.array([[0.5, -2.0, 1e-3], [-0.2, -1.0, 3e-3], [1e-3, 0.5, -2e-3]])


def untimed_rows(workdir):
  """The rows of `workdir`'s metrics.jsonl without their timing keys: what two runs that must end bit for bit
  alike agree on. Every line must parse (a torn row fails here rather than being skipped)."""
  from gen_jax.runtime.metrics import TIMING_KEYS
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


@pytest.fixture(scope="session")
def repo():
  return REPO


# The small Fashion-MNIST classifier of the tests that judge samples (test_sample_quality, test_figures,
# test_resume_every_family): trained once per pytest worker into a temporary cache folder; test_sample_quality
# holds it to 75% test accuracy.
SMALL_CLASSIFIER = dict(num_train_examples=5000, num_epochs=2)


@pytest.fixture(scope="session")
def small_classifier(tmp_path_factory, worker_id):
  """(classifier, the cache folder it was trained into). Under pytest-xdist the workers share one cache folder
  in this run's temporary root: the first worker to need the classifier trains it while holding a lock, and
  the others wait, then load it (training it costs ~12 s of both cores, loading it well under one)."""
  import fcntl
  from gen_jax.evaluation import classifier as classifier_lib
  if worker_id == "master":  # One process (`-n 0`): nobody to share with.
    cache_dir = tmp_path_factory.mktemp("classifiers")
  else:  # Each worker's base folder sits in the run's own root, which no other pytest run uses.
    cache_dir = tmp_path_factory.getbasetemp().parent / "classifiers"
    cache_dir.mkdir(exist_ok=True)
  with open(cache_dir / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    classifier = classifier_lib.load_or_train_classifier("fashion_mnist", cache_dir=str(cache_dir), **SMALL_CLASSIFIER)
  return classifier, str(cache_dir)


# scripts/test.sh runs the suite on two pytest-xdist workers, a file at a time (--dist loadfile keeps each
# file's module fixtures to one worker), in this order: the files with the most CPU time (measured cold) first,
# so that the cheap ones fill in at the end and both workers finish together. Unlisted files come last.
SLOWEST_FILES_FIRST = (  # Measured 2026-12-07 (seconds of test time: 80, 68, 65, 51, 38, 34, 30, 25, 19, ...).
    "test_gan.py", "test_resume_every_family.py", "test_resume_and_scale.py", "test_density.py", "test_families.py",
    "test_vae.py", "test_sample_quality.py", "test_figures.py", "test_likelihood.py", "test_data.py",
    "test_convolution.py", "test_cvae_ae.py", "test_gmm.py", "test_loop.py", "test_objectives.py",
    "test_mixed_precision.py", "test_bad_input_sweep.py")


def pytest_collection_modifyitems(items):
  rank = {name: index for index, name in enumerate(SLOWEST_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: a file's tests keep their order.
