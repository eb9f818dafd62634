"""Tests of gen_jax.evaluation.classifier and sample_quality, and of scripts/evaluate_samples.py.

The maths is checked against closed forms and brute force on tiny arrays; one small classifier (5000
Fashion-MNIST training images, 2 epochs: conftest's `small_classifier`, shared with the figure and resume
tests) is trained once per pytest worker and reused by the scoring tests. Tests that need Fashion-MNIST skip
when Debian's files are not installed.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import SMALL_CLASSIFIER, TINY_VAE_FLAGS, assert_user_error, run_experiment
from gen_jax.data import builders, load_split
from gen_jax.evaluation import classifier as classifier_lib
from gen_jax.evaluation import sample_quality as sq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_fashion_mnist = pytest.mark.skipif(
    bool(builders.missing_idx_files(builders.FASHION_MNIST_MANUAL_DIR)), reason="dataset-fashion-mnist missing")


# --- Fréchet distance ---------------------------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
  rng = np.random.default_rng(0)
  mean1, mean2 = rng.normal(size=6), rng.normal(size=6)
  std1, std2 = rng.uniform(0.1, 2.0, size=6), rng.uniform(0.1, 2.0, size=6)
  expected = np.sum((mean1 - mean2) ** 2) + np.sum((std1 - std2) ** 2)
  distance = sq.frechet_distance(mean1, np.diag(std1**2), mean2, np.diag(std2**2))
  assert distance == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_identical_gaussians_is_zero_even_when_singular():
  rng = np.random.default_rng(1)
  factor = rng.normal(size=(8, 3))  # Rank 3 of 8, like features with dead ReLU units.
  cov, mean = factor @ factor.T, rng.normal(size=8)
  assert sq.frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_brute_force_square_root_of_the_product():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
  cov1, cov2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
  mean1, mean2 = rng.normal(size=5), rng.normal(size=5)
  # C1 C2 is diagonalisable with positive real eigenvalues; its principal square root is V √Λ V⁻¹.
  eigenvalues, vectors = np.linalg.eig(cov1 @ cov2)
  sqrt_product = (vectors * np.sqrt(eigenvalues)) @ np.linalg.inv(vectors)
  np.testing.assert_allclose(sqrt_product @ sqrt_product, cov1 @ cov2, atol=1e-9)
  expected = np.sum((mean1 - mean2) ** 2) + np.trace(cov1 + cov2 - 2 * sqrt_product).real
  assert sq.frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-9)
  assert sq.frechet_distance(mean2, cov2, mean1, cov1) == pytest.approx(expected, rel=1e-9)  # Symmetric.


def test_frechet_distance_rejects_mismatched_shapes():
  assert_user_error(lambda: sq.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "(3,)", "(4,)")


# --- Precision and recall -----------------------------------------------------------------------------------


def brute_force_precision_recall(real, fake, k):
  def radii(points):
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, k - 1]
  cross = np.linalg.norm(fake[:, None] - real[None], axis=-1)
  return (np.mean(np.any(cross <= radii(real)[None, :], axis=1)),
          np.mean(np.any(cross <= radii(fake)[:, None], axis=0)))


def test_precision_recall_of_identical_sets_is_one():
  points = np.random.default_rng(3).normal(size=(200, 4))
  assert sq.precision_recall(points, points.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_of_far_apart_sets_is_zero():
  rng = np.random.default_rng(4)
  real, fake = rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 100.0
  assert sq.precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_of_a_collapsed_generator():
  # Real: two well-separated clusters of 50 points; fake: 100 points in the first cluster only. Every
  # fake point lies in the real manifold (precision 1) but only the first cluster is covered (recall ½).
  grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(5.0)), axis=-1).reshape(-1, 2)
  real = np.concatenate([grid, grid + 1000.0])
  fake = np.concatenate([grid, grid + 0.25])
  assert sq.precision_recall(real, fake, k=3) == (1.0, 0.5)


def test_precision_recall_matches_brute_force_across_chunks(monkeypatch):
  monkeypatch.setattr(sq, "DISTANCE_CHUNK_ROWS", 7)  # Several chunks, the last one short.
  rng = np.random.default_rng(5)
  real, fake = rng.normal(size=(60, 3)), 1.4 * rng.normal(size=(45, 3)) + 0.3
  for k in (1, 3, 5):
    assert sq.precision_recall(real, fake, k=k) == pytest.approx(brute_force_precision_recall(real, fake, k))


def test_precision_recall_rejects_k_as_large_as_a_set():
  points = np.zeros((3, 2))
  assert_user_error(lambda: sq.precision_recall(points, points, k=3), "k=3", "3 real")


# --- The classifier and scoring -----------------------------------------------------------------------------

@needs_fashion_mnist
def test_a_damaged_classifier_cache_is_trained_again_with_a_warning(tmp_path, capsys):
  tiny = dict(num_train_examples=300, num_epochs=1, cache_dir=str(tmp_path))
  first = classifier_lib.load_or_train_classifier("fashion_mnist", **tiny)
  for root, _, names in os.walk(os.path.join(first.checkpoint_dir, classifier_lib.CHECKPOINT_FOLDER)):
    for name in names:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"damaged")
  classifier_lib._LOADED.clear()
  capsys.readouterr()
  again = classifier_lib.load_or_train_classifier("fashion_mnist", **tiny)
  printed = capsys.readouterr().out
  warnings = [line for line in printed.splitlines() if line.startswith("warning:")]
  assert len(warnings) == 1 and "the classifier cache" in warnings[0] and "training it again" in warnings[0]
  assert again.checkpoint_dir == first.checkpoint_dir and again.test_accuracy == first.test_accuracy
  assert sorted(os.listdir(tmp_path)) == [os.path.basename(first.checkpoint_dir)]  # Nothing left behind.


@needs_fashion_mnist
def test_small_classifier_learns_and_is_cached(small_classifier):
  classifier, cache_dir = small_classifier
  assert classifier.test_accuracy > 0.75
  assert classifier.checkpoint_dir == os.path.join(cache_dir, "fashion_mnist-n5000-e2")
  with open(os.path.join(classifier.checkpoint_dir, "info.json")) as f:
    info = json.load(f)
  assert info["num_train_examples"] == 5000 and info["num_epochs"] == 2 and info["seed"] == 0
  assert info["architecture"] == classifier_lib.ARCHITECTURE and info["test_accuracy"] == classifier.test_accuracy
  # The recorded accuracy is the classifier's own on the test split.
  test = load_split("fashion_mnist", "test")
  assert np.mean(classifier.predict(test.images / 255.0) == test.labels) == pytest.approx(classifier.test_accuracy)

  classifier_lib._LOADED.clear()  # Load from disk, not from this process's memo.
  published = {name: os.stat(os.path.join(classifier.checkpoint_dir, name)).st_mtime_ns
               for name in os.listdir(classifier.checkpoint_dir)}
  again = classifier_lib.load_or_train_classifier("fashion_mnist", cache_dir=cache_dir, **SMALL_CLASSIFIER)
  # Loaded, not retrained: a retrained classifier is published anew, as a fresh folder.
  assert {name: os.stat(os.path.join(classifier.checkpoint_dir, name)).st_mtime_ns
          for name in os.listdir(classifier.checkpoint_dir)} == published
  assert again is not classifier and again.checkpoint_dir == classifier.checkpoint_dir
  assert again.test_accuracy == classifier.test_accuracy
  assert classifier_lib.load_or_train_classifier("fashion_mnist", cache_dir=cache_dir, **SMALL_CLASSIFIER) is again
  images = test.images[:1001] / 255.0  # Two chunks, the second padded.
  np.testing.assert_allclose(again.logits(images), classifier.logits(images), atol=1e-5)
  features = again.features(images)
  assert features.shape == (1001, classifier_lib.HIDDEN_SIZES[-1]) and features.min() >= 0.0  # Post-ReLU.
  # The default classifier's folder is a different one.
  default = classifier_lib.cache_directory("fashion_mnist", cache_dir=cache_dir)
  assert default == os.path.join(cache_dir, "fashion_mnist") != classifier.checkpoint_dir


@needs_fashion_mnist
def test_score_samples_of_real_images_is_near_the_floor(small_classifier):
  classifier = small_classifier[0]
  real = load_split("fashion_mnist", "test").images[:500] / 255.0
  scores = sq.score_samples(real, "fashion_mnist", classifier=classifier)
  assert scores["num_samples"] == 500 and scores["floor_num_samples"] == 500
  assert scores["reference_split"] == "train" and scores["classifier_checkpoint"] == classifier.checkpoint_dir
  # The first 500 test images are exactly the floor's images.
  for name in ("fcd", "precision", "recall"):
    assert scores[name] == pytest.approx(scores[f"{name}_floor"])
  noise = np.random.default_rng(0).uniform(size=real.shape).astype(np.float32)
  noise_scores = sq.score_samples(noise, "fashion_mnist", classifier=classifier)
  # Noise maps to one small region of feature space: far from the real mean and covering none of the real
  # images. (Its precision is not small: k-NN balls of outlying real images are large, the metric's known
  # weakness at small n, so it is not asserted.)
  assert noise_scores["fcd"] > 10 * scores["fcd"] and noise_scores["recall"] < 0.05
  assert noise_scores["fcd_floor"] == scores["fcd_floor"]  # From floors.json.
  assert_user_error(lambda: sq.score_samples(real[..., 0], "fashion_mnist", classifier=classifier),
                    "(500, 28, 28)", "(N, 28, 28, 1)")
  assert_user_error(lambda: sq.score_samples(real * 255, "fashion_mnist", classifier=classifier),
                    "255.0", "[0, 1]")
  assert_user_error(lambda: sq.score_samples(real, "mnist", classifier=classifier), "'fashion_mnist'")


def run_evaluate_samples(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate_samples.py"), *args],
                        capture_output=True, text=True, cwd=REPO, timeout=120)


@needs_fashion_mnist
def test_evaluate_samples_script_appends_a_row(small_classifier, tmp_path):
  classifier = small_classifier[0]
  samples = load_split("fashion_mnist", "test").images[:100] / 255.0
  np.save(tmp_path / "samples.npy", samples.astype(np.float32))
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 40, "examples_seen": 5120, "split": "test", "wall_time": 3.5, "elbo": -250.0})
            + "\n")
  (tmp_path / "config.json").write_text(json.dumps({"family": "vae", "dataset": "fashion_mnist"}))
  result = run_evaluate_samples(f"--samples={tmp_path / 'samples.npy'}", "--dataset=fashion_mnist",
                                f"--workdir={tmp_path}", f"--classifier_dir={classifier.checkpoint_dir}")
  assert result.returncode == 0, result.stderr
  assert "fcd" in result.stdout and "floor" in result.stdout
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert len(rows) == 2
  row = rows[-1]
  assert (row["step"], row["examples_seen"], row["split"]) == (40, 5120, "test")
  assert row["num_samples"] == 100 and row["classifier_checkpoint"] == classifier.checkpoint_dir
  expected = sq.score_samples(samples, "fashion_mnist", classifier=classifier)
  for name in ("fcd", "precision", "recall", "fcd_floor", "precision_floor", "recall_floor"):
    assert row[name] == pytest.approx(expected[name])


@needs_fashion_mnist
def test_evaluate_samples_script_draws_a_runs_own_samples(small_classifier, tmp_path):
  classifier = small_classifier[0]
  workdir = tmp_path / "vae"
  trained = run_experiment("vae", *TINY_VAE_FLAGS, "--num_epochs=1", f"--workdir={workdir}")
  assert trained.returncode == 0, trained.stderr
  # No --samples and no --dataset: the run draws them (by default its samples.npy) and names its dataset.
  result = run_evaluate_samples(f"--workdir={workdir}", f"--classifier_dir={classifier.checkpoint_dir}")
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  row = rows[-1]
  assert (row["step"], row["examples_seen"], row["split"]) == (rows[-2]["step"], rows[-2]["examples_seen"], "test")
  assert row["num_samples"] == 16  # The run's --num_samples.
  expected = sq.score_samples(np.load(workdir / "samples.npy"), "fashion_mnist", classifier=classifier)
  for name in ("fcd", "precision", "recall", "fcd_floor"):
    assert row[name] == pytest.approx(expected[name], rel=1e-5)
  # Other scores of the same names at the same step: the workdir keeps one such row, and the script says so.
  event_files = sorted(os.listdir(workdir / "tensorboard"))
  again = run_evaluate_samples(f"--workdir={workdir}", "--num_samples=8",
                               f"--classifier_dir={classifier.checkpoint_dir}")
  assert again.returncode == 0, again.stderr
  assert "[8 samples" in again.stdout and "not appended" in again.stdout
  assert len(open(workdir / "metrics.jsonl").readlines()) == len(rows)
  assert sorted(os.listdir(workdir / "tensorboard")) == event_files  # Nothing written: no new event file either.


@needs_fashion_mnist
def test_evaluate_samples_script_bad_input_is_one_line(small_classifier, tmp_path):
  np.save(tmp_path / "flat.npy", np.zeros((10, 784), np.float32))
  flat = run_evaluate_samples(f"--samples={tmp_path / 'flat.npy'}", "--dataset=fashion_mnist",
                              f"--classifier_dir={small_classifier[0].checkpoint_dir}")
  no_dataset = run_evaluate_samples(f"--samples={tmp_path / 'flat.npy'}")
  # A --workdir that holds no run, and one whose run is on other data: refused before anything is written there.
  (tmp_path / "not_a_run").mkdir()
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(json.dumps({"family": "vae", "dataset": "fashion_mnist"}))
  not_a_run = run_evaluate_samples(f"--samples={tmp_path / 'flat.npy'}", "--dataset=fashion_mnist",
                                   f"--workdir={tmp_path / 'not_a_run'}")
  other_data = run_evaluate_samples(f"--samples={tmp_path / 'flat.npy'}", "--dataset=mnist",
                                    f"--workdir={tmp_path / 'run'}")
  assert os.listdir(tmp_path / "not_a_run") == [] and os.listdir(tmp_path / "run") == ["config.json"]
  for result, fragments in ((flat, ("(10, 784)", "(N, 28, 28, 1)")), (no_dataset, ("--dataset",)),
                            (not_a_run, ("not_a_run holds no run",)),
                            (other_data, ("--dataset=mnist", "fashion_mnist"))):
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
      assert fragment in result.stderr, result.stderr


def test_samples_file_bad_input_is_one_line(tmp_path):
  assert_user_error(lambda: sq.load_samples_file(str(tmp_path / "none.npy")), "none.npy", "does not exist")
  np.savez(tmp_path / "samples.npz", x=np.zeros((4, 28, 28, 1)))
  assert_user_error(lambda: sq.load_samples_file(str(tmp_path / "samples.npz")), "is not a .npy file")
  np.save(tmp_path / "samples.npy", np.zeros((4, 28, 28, 1), np.float32))
  assert sq.load_samples_file(str(tmp_path / "samples.npy")).shape == (4, 28, 28, 1)


def test_classifier_bad_input_is_one_line(tmp_path):
  assert_user_error(lambda: classifier_lib.load_classifier(str(tmp_path)), str(tmp_path), "info.json")
  assert_user_error(lambda: classifier_lib.load_or_train_classifier("fashion_mnist", num_epochs=0,
                                                                    cache_dir=str(tmp_path)), "num_epochs 0")
  np.savez(tmp_path / "unlabelled.npz", x=np.zeros((20, 4, 4, 1), np.uint8))
  assert_user_error(lambda: classifier_lib.load_or_train_classifier(f"npz:{tmp_path / 'unlabelled.npz'}",
                                                                    cache_dir=str(tmp_path)), "no labels")


@needs_fashion_mnist
def test_classifier_flagfile_reports_the_cached_classifier(small_classifier):
  classifier, cache_dir = small_classifier
  command = [sys.executable, "-m", "experiments.classifier",
             f"--flagfile={os.path.join(REPO, 'experiments', 'configs', 'classifier_fashion_mnist.cfg')}",
             "--num_train_examples=5000", "--num_epochs=2", f"--cache_dir={cache_dir}"]
  result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode == 0, result.stderr
  assert f"test accuracy {classifier.test_accuracy:.2%}" in result.stdout
  assert f"loaded from {classifier.checkpoint_dir}" in result.stdout
  bad = subprocess.run(command + ["--num_epochs=-1"], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert bad.returncode == 2 and bad.stderr == "error: --num_epochs=-1 is not allowed; allowed: an integer >= 1\n"
