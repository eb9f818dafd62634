"""The VAE experiment end to end: the workdir contract, the flagfiles, and every bad input of issue 2."""

import json
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import (TINY_VAE_FLAGS, assert_one_line_error, finish, run_experiment,
                      start_experiment)

REQUIRED_KEYS = {"step", "examples_seen", "split", "wall_time"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """Two epochs of a tiny VAE through the real command line."""
  workdir = tmp_path_factory.mktemp("vae") / "run"
  result = run_experiment("vae", *TINY_VAE_FLAGS, "--num_epochs=2", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  return workdir, result


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_workdir_holds_every_output_of_the_contract(tiny_run):
  workdir, result = tiny_run
  rows = _rows(workdir)
  train = [row for row in rows if row["split"] == "train"]
  test = [row for row in rows if row["split"] == "test"]
  assert all(REQUIRED_KEYS <= set(row) for row in rows)
  assert [row["step"] for row in train] == [4, 8, 12, 16]
  assert all("examples_per_sec" in row and row["examples_per_sec"] > 0 for row in train)
  assert [row["step"] for row in test] == [8, 16]  # After every epoch (8 steps of 64 of 512 examples).
  for row in rows:
    assert row["examples_seen"] == 64 * row["step"]
    assert row["elbo"] == pytest.approx(row["recon"] - row["kl"], rel=1e-5)
    assert row["kl"] >= 0 and row["elbo"] < 0
  assert test[1]["elbo"] > test[0]["elbo"]  # It learns.

  flags_text = (workdir / "flags.txt").read_text()
  assert "--latent_dim=4" in flags_text and "--batch_size=64" in flags_text
  samples = np.load(workdir / "samples.npy")
  assert samples.shape == (16, 28, 28, 1) and samples.dtype == np.float32
  assert 0.0 <= samples.min() and samples.max() <= 1.0
  images = set(os.listdir(workdir / "images"))
  assert {"reconstructions_00000008.png", "samples_00000016.png", "elbo_curve.png"} <= images
  assert any(name.startswith("events") for name in os.listdir(workdir / "tensorboard"))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["16", "8"]
  assert "step      16" in result.stdout and "examples/s" in result.stdout and "ETA" in result.stdout
  assert f"step 8 test: elbo={test[0]['elbo']:.4g}" in result.stdout  # Each evaluation on the console too.
  assert f"step 16 test: elbo={test[1]['elbo']:.4g}" in result.stdout


def test_rerunning_a_finished_run_changes_nothing(tiny_run):
  workdir, _ = tiny_run
  before = (workdir / "metrics.jsonl").read_text()
  result = run_experiment("vae", *TINY_VAE_FLAGS, "--num_epochs=2", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  assert (workdir / "metrics.jsonl").read_text() == before


def test_default_flagfile_runs_on_a_subset(tmp_path):
  """vae_fashion_mnist.cfg as shipped, shortened by flags given after the flagfile."""
  result = run_experiment(
      "vae", "--flagfile=experiments/configs/vae_fashion_mnist.cfg", f"--workdir={tmp_path / 'run'}",
      "--num_train_examples=256", "--num_test_examples=100", "--eval_batch_size=100", "--num_steps=4",
      "--batch_size=64", "--num_samples=8", "--log_every_steps=2", "--steps_per_dispatch=2", "--verbosity=0")
  assert result.returncode == 0, result.stderr
  # -v 0 brings absl's info lines back, once each (not again through a second handler on stderr).
  assert len([line for line in result.stderr.splitlines() if re.search(r"step +4  elbo", line)]) == 1, result.stderr
  rows = _rows(tmp_path / "run")
  assert rows[-1]["split"] == "test" and rows[-1]["step"] == 4
  flags_text = (tmp_path / "run" / "flags.txt").read_text()
  assert "--binarization=dynamic" in flags_text and "--hidden_sizes=512,256" in flags_text


def test_a_run_outlives_the_reader_of_its_output(tmp_path):
  """`python -m experiments.vae ... 2>&1 | head -1`: the console goes away after one line, the run does not."""
  process = start_experiment("vae", *TINY_VAE_FLAGS, "--num_steps=24", f"--workdir={tmp_path / 'run'}",
                             stderr=subprocess.STDOUT)
  process.stdout.readline()
  process.stdout.close()  # Every later print, and Python's flush at exit, meets a pipe with no reader.
  assert process.wait(timeout=240) == 0
  rows = _rows(tmp_path / "run")
  assert rows[-1]["split"] == "test" and rows[-1]["step"] == 24
  assert (tmp_path / "run" / "samples.npy").exists()


def test_non_finite_loss_stops_with_the_step(tmp_path):
  # Weights of scale 1e30 overflow the first matmul, so the very first loss is NaN.
  result = run_experiment("vae", *TINY_VAE_FLAGS, "--num_steps=4", "--init_std=1e30",
                          f"--workdir={tmp_path / 'run'}")
  assert_one_line_error(result, "nan", "at step 1")
  assert not os.path.exists(tmp_path / "run" / "checkpoints" / "4")


def _bad_npz_files(directory):
  np.savez(directory / "wrong_shape.npz", x=np.zeros((10, 5), np.uint8))
  np.savez(directory / "wrong_dtype.npz", x=np.array([["a"] * 4] * 10))
  return directory


def test_bad_input_gets_one_line_and_keeps_the_workdir(tmp_path):
  """Every bad input of issue 2, run concurrently: exit != 0, one line naming the value, no traceback."""
  _bad_npz_files(tmp_path)
  (tmp_path / "a_file").write_text("not a directory")
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "metrics.jsonl").write_text('{"step": 1}\n')
  empty = tmp_path / "empty"
  empty.mkdir()
  (tmp_path / "latin1.cfg").write_bytes("--latent_dim=4  # café\n".encode("latin-1"))
  workdir = f"--workdir={existing}"
  # An unknown dataset name and --batch_size=0 in such a workdir: test_families.py's refused runs (exit status 2,
  # and not a byte of the workdir changed).
  cases = [
      (("--learning_rate=-1", workdir), "--learning_rate=-1", {}),
      (("--latent_dim=-3", workdir), "--latent_dim=-3", {}),
      (("--flagfile=no/such.cfg", workdir), "no/such.cfg", {}),
      (("--batch_size=many", workdir), "many", {}),
      (("--workdir=" + str(tmp_path / "a_file"),), "a_file", {}),
      ((f"--dataset=npz:{tmp_path / 'wrong_shape.npz'}", workdir), "wrong_shape.npz", {}),
      ((f"--dataset=npz:{tmp_path / 'wrong_dtype.npz'}", workdir), "wrong_dtype.npz", {}),
      ((f"--dataset=npz:{tmp_path / 'missing.npz'}", workdir), "missing.npz", {}),
      ((f"--data_dir={empty}", workdir), "fashion", {"GEN_JAX_FASHION_MNIST_MANUAL_DIR": str(empty)}),
      ((f"--flagfile={tmp_path / 'latin1.cfg'}", workdir), "latin1.cfg) is not UTF-8 text", {}),
      (("--coordinator_address=localhost:1", "--num_processes=0", "--process_id=0", workdir),
       "--num_processes=0 is not allowed", {}),
      (("--num_processes=2", "--process_id=1", workdir), "need --coordinator_address", {}),
  ]
  processes = [(start_experiment("vae", *flags, env=env), fragment) for flags, fragment, env in cases]
  for process, fragment in processes:
    assert_one_line_error(finish(process), fragment)
  assert (existing / "metrics.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.parametrize("architecture,likelihood,gaussian_std", [
    ("conv", "bernoulli", 0.0), ("mlp", "gaussian", 0.0), ("mlp", "gaussian", 0.1),
    ("mlp", "continuous_bernoulli", 0.0)])
def test_every_decoder_and_architecture_takes_a_finite_training_step(architecture, likelihood, gaussian_std):
  import jax
  from flax.training import train_state
  from gen_jax import optim
  from gen_jax.families import latent_code, vae as vae_family
  config = vae_family.VAEConfig(architecture=architecture, likelihood=likelihood, gaussian_std=gaussian_std,
                                hidden_sizes=(16,), latent_dim=3)
  model = latent_code.build_model(config, (8, 8, 1))  # Small images: this tests the maths, not the size.
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))

  # Jitted, as the loop runs them: one compilation each instead of one per operation run eagerly.
  @jax.jit
  def initial_state(x):
    params = model.init(jax.random.key(1), x[:1], jax.random.key(2))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params,
                                         tx=optim.make_optimizer(config, total_steps=10))

  state = initial_state(x)
  new_state, metrics = jax.jit(lambda state, batch, key: vae_family.train_step(state, batch, key, model, config))(
      state, {"x": x}, jax.random.key(3))
  assert all(np.isfinite(float(value)) for value in metrics.values())
  assert float(metrics["kl"]) >= 0
  assert metrics["elbo"] == pytest.approx(float(metrics["recon"] - metrics["kl"]), rel=1e-5)
  assert int(new_state.step) == 1
  changed = jax.tree.map(lambda new, old: not np.array_equal(new, old), new_state.params, state.params)
  assert all(jax.tree.leaves(changed))  # Every parameter moved.


def test_the_readme_from_python_snippet_runs_on_a_trained_run(tiny_run):
  """The README's "From Python" code, on the tiny run: samples are samples.npy, codes and bounds make sense."""
  import re
  from conftest import REPO
  workdir, _ = tiny_run
  readme = open(os.path.join(REPO, "README.md")).read()
  snippet = re.search(r"## From Python\n.*?```python\n(.*?)```", readme, re.S).group(1)
  namespace = {}
  exec(snippet.replace('"runs/vae"', repr(str(workdir))), namespace)  # noqa: S102 (the README's own code)
  np.testing.assert_array_equal(namespace["images"], np.load(workdir / "samples.npy"))  # num_samples is 16.
  assert namespace["run"].family == "vae" and namespace["run"].step == 16
  assert namespace["codes"].shape == (8, 4) and namespace["reconstructions"].shape == (8, 28, 28, 1)
  log_px = namespace["log_px"]
  assert log_px.shape == (8,) and np.all(np.isfinite(log_px)) and np.all(log_px < 0)
  # L_100 is a tighter bound than L_1 (the one-sample ELBO) on the same images.
  one_sample = namespace["run"].log_likelihood(namespace["x"], k=1)
  assert np.mean(log_px) > np.mean(one_sample)
  assert set(namespace["last_test_row"]) >= {"elbo", "recon", "kl"}


def test_train_step_weighs_the_kl_by_beta_and_the_warm_up_at_its_own_step():
  """loss = −(recon − w·kl), w = β·min(1, epoch / warm-up epochs) at the state's step: epoch 2 of a 4-epoch
  warm-up at step 7 of 5-step epochs gives w = ½, epoch 1 with β = 2 gives ½ as well, β alone gives β."""
  import jax
  from flax.training import train_state
  from gen_jax import optim
  from gen_jax.families import latent_code, vae as vae_family
  x = jax.random.uniform(jax.random.key(0), (4, 4, 4, 1))
  for changes, step, weight in [(dict(kl_warmup_epochs=4), 7, 0.5), (dict(beta=2.0), 0, 2.0),
                                (dict(kl_warmup_epochs=4, beta=2.0), 0, 0.5)]:
    config = vae_family.VAEConfig(hidden_sizes=(8,), latent_dim=2, **changes)
    model = latent_code.build_model(config, (4, 4, 1))
    params = model.init(jax.random.key(1), x[:1], jax.random.key(2))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                          tx=optim.make_optimizer(config, total_steps=10)).replace(step=np.int32(step))
    _, metrics = vae_family.train_step(state, {"x": x}, jax.random.key(3), model, config, steps_per_epoch=5)
    recon, kl = float(metrics["recon"]), float(metrics["kl"])
    assert kl > 0.01 and float(metrics["loss"]) == pytest.approx(-(recon - weight * kl), rel=1e-5), changes
    assert float(metrics["elbo"]) == pytest.approx(recon - kl, rel=1e-5)
