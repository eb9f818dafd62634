"""scripts/figures.py on tiny trained runs, and those runs' workdirs (the AE and CVAE flagfiles' smoke runs).

One module fixture trains, once, with conftest's small classifier (5000 examples, 2 epochs, shared with the
other files that judge samples): the CVAE through its flagfile as a subprocess, and meanwhile, in-process, the
autoencoder, a 2-D latent VAE and a two-step DCGAN (for the comparison figure). The figures are then drawn in-process
through `figures.main`, so the command line is exercised without paying a JAX start-up per figure.
"""

import json
import math
import os

import numpy as np
import pytest

import gen_jax
from gen_jax import plots
from gen_jax.errors import UserError
from conftest import TINY_LATENT_CODE_FLAGS, finish, load_script, start_experiment
from gen_jax.evaluation import sample_quality
from gen_jax.families import autoencoder, gan, vae
from gen_jax.runtime import run as run_lib

figures = load_script("figures")

TINY_FLAGS = (*TINY_LATENT_CODE_FLAGS, "--num_epochs=2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_classifier):
  root = tmp_path_factory.mktemp("figures")
  classifier = small_classifier[0]
  workdirs = {name: root / name for name in ("autoencoder", "cvae", "vae2d", "dcgan")}
  # The CVAE through its flagfile (the command-line contract), while the others train in-process.
  cvae_process = start_experiment(
      "cvae", "--flagfile=experiments/configs/cvae_fashion_mnist.cfg", *TINY_FLAGS,
      f"--workdir={workdirs['cvae']}", f"--classifier={classifier.checkpoint_dir}",
      "--conditional_samples_per_class=50")
  tiny = dict(num_train_examples=512, num_test_examples=200, eval_batch_size=100, batch_size=64,
              hidden_sizes=(32,), num_samples=16, num_images=8, log_every_steps=4, steps_per_dispatch=4,
              num_epochs=2)
  for name in ("autoencoder", "vae2d", "dcgan"):
    workdirs[name].mkdir()  # The experiments make their workdir; an in-process run is handed one.
  run_lib.train_and_evaluate(autoencoder, autoencoder.Config(latent_dim=4, **tiny), str(workdirs["autoencoder"]))
  run_lib.train_and_evaluate(vae, vae.Config(latent_dim=2, **tiny), str(workdirs["vae2d"]))
  run_lib.train_and_evaluate(gan, gan.Config(
      dataset="fashion_mnist", architecture="dcgan", num_train_examples=64, num_test_examples=16, batch_size=16,
      base_features=4, num_steps=2, log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2,
      score_sample_quality=False, num_samples=8, num_images=4), str(workdirs["dcgan"]))
  result = finish(cvae_process)
  assert result.returncode == 0, result.stderr
  return {name: str(path) for name, path in workdirs.items()} | {"classifier": classifier}


def _rows(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [row for row in map(json.loads, f) if row["split"] == split]


def _numbers(path):
  with open(os.path.splitext(path)[0] + ".json") as f:
    return json.load(f)


def test_the_classifier_judging_the_figures_learnt_fashion_mnist(runs):
  # Its own tests hold the default classifier to 85%, test_sample_quality this 5000-example, 2-epoch one to 75%.
  assert runs["classifier"].test_accuracy > 0.6


def test_autoencoder_and_cvae_runs_keep_the_workdir_contract(runs):
  for row in _rows(runs["autoencoder"], "test"):
    assert row["recon"] < 0 and not {"elbo", "kl"} & set(row)  # No bound is claimed for an autoencoder.
  ae_test = _rows(runs["autoencoder"], "test")
  assert [row["step"] for row in ae_test] == [8, 16] and ae_test[1]["recon"] > ae_test[0]["recon"]
  assert np.load(os.path.join(runs["autoencoder"], "samples.npy")).shape == (16, 28, 28, 1)
  assert os.path.exists(os.path.join(runs["autoencoder"], "images", "recon_curve.png"))

  cvae_test = _rows(runs["cvae"], "test")
  assert [row["step"] for row in cvae_test] == [8, 16]
  for row in cvae_test:
    assert row["elbo"] == pytest.approx(row["recon"] - row["kl"], rel=1e-5)
    per_class = [row[f"conditional_accuracy_{label}"] for label in range(10)]
    assert all(value in {k / 50 for k in range(51)} for value in per_class)  # Shares of 50 samples.
    assert row["conditional_accuracy"] == pytest.approx(np.mean(per_class))
  with open(os.path.join(runs["cvae"], "config.json")) as f:
    assert json.load(f)["conditional"] is True
  # Given images are encoded, reconstructed and scored under their own classes, never made-up ones.
  cvae_run = gen_jax.load_run(runs["cvae"])
  x, y = cvae_run.dataset.test_images[:4], cvae_run.dataset.test_labels[:4]
  for operation in (cvae_run.encode, cvae_run.reconstruct):
    with pytest.raises(UserError, match=r"a conditional run encodes.*allowed: labels= with one class in 0\.\.9"):
      operation(x)
    with pytest.raises(UserError, match=r"\(3 of them\) for 4 outputs; allowed: 4 classes in 0\.\.9"):
      operation(x, y[:3])
  with pytest.raises(UserError, match="labels= with one class"):
    cvae_run.log_likelihood(x, k=2)
  # The labels given are the ones used: another class gives another code and another reconstruction.
  assert not np.allclose(cvae_run.encode(x, y), cvae_run.encode(x, (y + 1) % 10))
  assert not np.allclose(cvae_run.reconstruct(x, y), cvae_run.reconstruct(x, (y + 1) % 10))
  assert cvae_run.sample(3).shape == (3, 28, 28, 1)  # Generation still cycles the classes by default.


def test_interpolation_figure_and_its_numbers(runs):
  png, *_ = figures.main(["interpolation", f"--ae_workdir={runs['autoencoder']}",
                          f"--vae_workdir={runs['vae2d']}", "--num_pairs=20", "--num_points=5",
                          f"--classifier={runs['classifier'].checkpoint_dir}"])
  assert png == os.path.join(runs["vae2d"], "images", "interpolation_ae_vs_vae.png") and os.path.exists(png)
  numbers = _numbers(png)
  assert numbers["t"] == [0.0, 0.25, 0.5, 0.75, 1.0] and numbers["num_pairs"] == 20
  confidence = numbers["mean_classifier_confidence"]
  assert set(confidence) == {"pixels", "autoencoder", "vae"}
  # At t = 0 the cross-fade is the first real image itself.
  assert confidence["pixels"][0] == pytest.approx(numbers["real_test_image_confidence"], rel=1e-6)
  for name, values in confidence.items():
    assert numbers["midpoint_confidence"][name] == values[2]
    assert all(0.1 - 1e-6 <= value <= 1.0 + 1e-6 for value in values)  # A top probability of 10 classes.


def test_interpolation_path_ends_at_the_reconstructions(runs):
  run, data = figures.open_run(runs["autoencoder"])
  assert run.family == "autoencoder"
  x_a, x_b = data.test[:3], data.test[3:6]
  paths = figures.interpolation_paths(run.encode, run.decode, x_a, x_b, np.array([0.0, 0.5, 1.0], np.float32))
  np.testing.assert_allclose(paths[:, 0], run.decode(run.encode(x_a)), atol=1e-6)
  np.testing.assert_allclose(paths[:, 0], run.reconstruct(x_a), atol=1e-6)
  np.testing.assert_allclose(paths[:, 2], run.decode(run.encode(x_b)), atol=1e-6)
  midpoint = run.decode(0.5 * (run.encode(x_a) + run.encode(x_b)))
  np.testing.assert_allclose(paths[:, 1], midpoint, atol=1e-6)
  # The figures show the dataset's intensities, not the binarised test split the run evaluates on.
  assert run.config.binarization != "none" and set(np.unique(run.dataset.test_images)) <= {0, 255}
  assert len(np.unique(data.test)) > 2 and data.test.max() <= 1.0
  np.testing.assert_array_equal(data.test_labels, run.dataset.test_labels)
  fade = figures.cross_fade(x_a, x_b, np.array([0.25], np.float32))[:, 0]
  np.testing.assert_allclose(fade, 0.75 * x_a + 0.25 * x_b, atol=1e-6)


def test_style_grid_decodes_one_style_with_every_class(runs):
  png, *_ = figures.main(["style_grid", f"--workdir={runs['cvae']}", "--num_sources=4", "--num_scored=40",
                          f"--classifier={runs['classifier'].checkpoint_dir}"])
  numbers = _numbers(png)
  assert os.path.exists(png) and numbers["num_sources_scored"] == 40
  per_class = numbers["transfer_accuracy_per_class"]
  assert len(per_class) == 10 and all(value in {k / 40 for k in range(41)} for value in per_class)
  assert numbers["transfer_accuracy"] == pytest.approx(np.mean(per_class))


def test_manifold_decodes_the_inverse_cdf_grid(runs):
  codes = figures.manifold_codes(4)
  # Φ(z) puts every grid point at a cell centre of (0, 1)², top row first with the largest z₂.
  phi = 0.5 * (1.0 + np.vectorize(math.erf)(codes / math.sqrt(2.0)))
  centres = (np.arange(4) + 0.5) / 4
  np.testing.assert_allclose(phi[:, 0], np.tile(centres, 4), atol=1e-6)
  np.testing.assert_allclose(phi[:, 1], np.repeat(centres[::-1], 4), atol=1e-6)
  paths = figures.main(["manifold", f"--workdir={runs['vae2d']}", "--grid_size=5", "--num_scatter=100"])
  assert [os.path.basename(path) for path in paths] == ["latent_manifold.png", "latent_scatter.png"]
  assert all(os.path.getsize(path) > 0 for path in paths)


def test_samples_figure_and_its_nearest_neighbours(runs):
  png, *_ = figures.main(["samples", f"--workdir={runs['vae2d']}", "--num_shown=6", "--num_scored=50"])
  numbers = _numbers(png)
  assert os.path.exists(png) and numbers["num_scored"] == 50 and numbers["family"] == "vae"
  assert numbers["nearest_training_distance"]["samples"] >= numbers["min_nearest_training_distance_of_samples"]

  rng = np.random.default_rng(0)
  references, queries = rng.random((37, 3, 3, 1)), rng.random((5, 3, 3, 1))
  index, distance = figures.nearest_neighbours(queries, references, chunk=10)  # Chunks must agree.
  brute = np.linalg.norm(queries.reshape(5, 1, -1) - references.reshape(1, 37, -1), axis=-1)
  np.testing.assert_array_equal(index, brute.argmin(axis=1))
  np.testing.assert_allclose(distance, brute.min(axis=1), rtol=1e-4)
  checkerboard = (np.indices((4, 4)).sum(axis=0) % 2).astype(np.float32)[None, ..., None]
  np.testing.assert_allclose(figures.total_variation(np.concatenate([checkerboard, 0 * checkerboard])),
                             [1.0, 0.0])


def test_comparison_figure_scores_each_row_as_score_samples_does(runs):
  classifier = runs["classifier"]
  png, *_ = figures.main(["compare", f"--vae_workdir={runs['vae2d']}", f"--gan_workdir={runs['dcgan']}",
                          "--num_shown=4", "--num_scored=60", "--num_distances=30",
                          f"--classifier={classifier.checkpoint_dir}"])
  numbers = _numbers(png)
  assert png == os.path.join(runs["vae2d"], "images", "vae_vs_gan_vs_real.png") and os.path.exists(png)
  assert set(numbers["rows"]) == {"VAE samples", "GAN samples", "real test images"}
  assert numbers["num_scored"] == 60 and numbers["num_distances"] == 30 and len(numbers["table"]) == 5
  _, data = figures.open_run(runs["vae2d"])
  real = numbers["rows"]["real test images"]
  expected = sample_quality.score_samples(data.test[:60], "fashion_mnist", classifier=classifier)
  assert (real["fcd"], real["precision"], real["recall"]) == pytest.approx(
      (expected["fcd"], expected["precision"], expected["recall"]), rel=1e-6)
  assert real["total_variation"] == pytest.approx(figures.total_variation(data.test[:60]).mean(), rel=1e-6)
  _, distances = figures.nearest_neighbours(data.test[:30], data.train)
  assert real["nearest_training_distance"] == pytest.approx(distances.mean(), rel=1e-5)
  # The model rows score each run's own samples (its seed's, as samples.npy holds).
  for name, workdir in (("VAE samples", runs["vae2d"]), ("GAN samples", runs["dcgan"])):
    samples, row = gen_jax.load_run(workdir).sample(60), numbers["rows"][name]
    expected = sample_quality.score_samples(samples, "fashion_mnist", classifier=classifier)
    assert (row["fcd"], row["precision"], row["recall"]) == pytest.approx(
        (expected["fcd"], expected["precision"], expected["recall"]), rel=1e-6), name
    assert row["total_variation"] == pytest.approx(figures.total_variation(samples).mean(), rel=1e-6), name


def test_kl_curves_come_from_the_training_kl(tmp_path):
  s = np.linspace(-3.0, 3.0, 13, dtype=np.float32)
  exp_s, one_plus_s, difference = figures.kl_curve_values(s)
  np.testing.assert_allclose(difference, np.exp(s) - (1.0 + s), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(exp_s - one_plus_s, difference, rtol=1e-5, atol=1e-6)
  png, *_ = figures.main(["kl_curves", f"--workdir={tmp_path}"])
  numbers = _numbers(png)
  assert numbers["argmin_log_variance"] == 0.0 and numbers["min_difference"] == 0.0


def test_figures_refuse_the_wrong_run_in_one_line(runs, capsys, tmp_path):
  for argv, fragment in (
      (["manifold", f"--workdir={runs['autoencoder']}"], "--latent_dim=4"),
      (["style_grid", f"--workdir={runs['vae2d']}"], "not a conditional VAE"),
      (["samples", f"--workdir={tmp_path}"], "holds no config.json"),
      (["manifold", "--workdir"], "expected one argument"),
      (["manifold", f"--workdir={runs['vae2d']}", "--grid_size=0"], "allowed: a positive integer")):
    with pytest.raises(SystemExit) as info:
      figures.main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines


def test_interpolation_pairs_differ_in_class_or_else_in_image():
  labels = np.array([0, 0, 1, 1, 2])
  first, second = figures.pairs_of_different_classes(5, labels, 50, seed=0)
  assert len(first) == 50 and np.all(labels[first] != labels[second])
  for unusable in (None, np.zeros(5, np.int32)):  # No labels, or one class only: different images.
    first, second = figures.pairs_of_different_classes(5, unusable, 20, seed=0)
    assert len(first) == 20 and np.all(first != second)


def test_image_grids_are_drawn_grey_or_in_colour_as_the_images_are():
  """One channel in grey on [0, 1]; three as RGB, not their red channel in grey."""
  plt = plots.pyplot()
  figure, axes = plt.subplots(1, 2)
  colour = np.zeros((2, 3, 3, 3), np.float32)
  colour[..., 1] = 1.0  # Green.
  plots.show_image_grid(axes[0], colour, 2)
  plots.show_image_grid(axes[1], colour[..., :1] + 0.5, 2)
  shown_colour, shown_grey = (axis.get_images()[0] for axis in axes)
  assert shown_colour.get_array().shape == (3, 7, 3) and float(shown_colour.get_array()[0, 0, 1]) == 1.0
  assert shown_grey.get_array().shape == (3, 7) and shown_grey.get_cmap().name == "gray"
  assert shown_grey.get_clim() == (0.0, 1.0)
  plt.close(figure)
