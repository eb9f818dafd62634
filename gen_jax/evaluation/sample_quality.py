"""Sample quality in the feature space of the project's classifier: Fréchet distance, precision and recall.

  scores = score_samples(samples01, "fashion_mnist")   # samples (N, H, W, C) in [0, 1], e.g. samples.npy
  scores["fcd"], scores["precision"], scores["recall"]             # the samples
  scores["fcd_floor"], scores["precision_floor"], scores["recall_floor"]   # real test vs real train images

Any model's samples are scored the same way (`scripts/evaluate_samples.py`), so a VAE and a GAN trained on
the same data can be compared, each number beside the floor that real data reaches.

Decisions:
- `fcd`, the Fréchet classifier distance (README, "Sample quality"): the Fréchet distance between
  Gaussians fitted (mean and unbiased covariance) to the classifier's penultimate-layer features of the
  samples and of the whole reference split. Computed in float64 numpy without scipy: Tr((C1 C2)^½) is the
  sum of the square roots of the eigenvalues of the symmetric PSD matrix C1^½ C2 C1^½ (similar to C1 C2),
  which avoids the complex round-off of a general matrix square root; rank-deficient covariances (dead ReLU
  units) are fine.
- `precision` and `recall` (Kynkäänniemi et al. 2019, k = 3): a set's manifold is the union of balls around its
  feature vectors, each of radius the distance to its k-th nearest neighbour in the set. Precision = share of
  samples inside the real manifold, recall = share of real images inside the samples' manifold. The radii
  shrink as a set grows, so both sets have the same size n = min(#samples, `PR_MAX_EXAMPLES`): the first n
  samples against the first n reference images. Distances are computed in row chunks (memory O(chunk × n)).
- The floor: the same metrics for n real images of the other split (test when the reference is train)
  against the reference, at the samples' n because FCD is biased upward at small n (capped by the
  `PR_MAX_EXAMPLES` cached images of that split; `floor_num_samples` says how many). A perfect generator
  scores the floor, not zero.
- Caches, in the classifier's folder so they never outlive their classifier: the mean, covariance and first
  `PR_MAX_EXAMPLES` features of each split (`reference-<split>.npz`) and the floors per (split, n, k)
  (`floors.json`). Scoring 10k samples then costs a forward pass and one precision/recall.
"""

import json
import os
from typing import Optional

import numpy as np

from gen_jax import files
from gen_jax.data import SPLITS, load_split
from gen_jax.errors import UserError
from gen_jax.evaluation import classifier as classifier_lib
from gen_jax.progress import Progress

PR_K = 3
# Images per set for precision and recall (the paper's sets are as large as the data allows; 10k is the
# Fashion-MNIST and MNIST test split).
PR_MAX_EXAMPLES = 10000
# Rows of a pairwise-distance block: 1024 × 10k float64 is 80 MB.
DISTANCE_CHUNK_ROWS = 1024
FLOORS_FILE = "floors.json"


# --- The maths ----------------------------------------------------------------------------------------------


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(mean (F,), unbiased covariance (F, F)) of features (N, F), in float64."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise UserError(f"features of shape {features.shape} cannot be fitted by a Gaussian; allowed: (N, F) "
                    "with N >= 2")
  return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _psd_square_root(matrix: np.ndarray) -> np.ndarray:
  """The symmetric square root of a symmetric PSD matrix; round-off negative eigenvalues count as 0."""
  eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
  """||μ1 − μ2||² + Tr(C1 + C2 − 2 (C1 C2)^½), the squared 2-Wasserstein distance of two Gaussians."""
  mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  dim = mean1.shape[-1] if mean1.ndim == 1 else None
  if dim is None or mean2.shape != (dim,) or cov1.shape != (dim, dim) or cov2.shape != (dim, dim):
    raise UserError(f"Gaussians of shapes mean {mean1.shape}, cov {cov1.shape} and mean {mean2.shape}, cov "
                    f"{cov2.shape}; allowed: means (F,) and covariances (F, F) of one F")
  sqrt_cov1 = _psd_square_root(cov1)
  middle = sqrt_cov1 @ cov2 @ sqrt_cov1  # Same eigenvalues as C1 C2, but symmetric PSD.
  trace_sqrt_product = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
  distance = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product
  return float(max(distance, 0.0))  # ≥ 0 exactly; only round-off can take it below.


def _squared_distances(rows: np.ndarray, points: np.ndarray, points_squared_norms: np.ndarray) -> np.ndarray:
  """(len(rows), len(points)) squared Euclidean distances, clipped at 0 against round-off."""
  squared = rows @ points.T
  squared *= -2.0  # In place: the elementwise passes over a 1024 × 10k block cost as much as the matmul.
  squared += np.sum(rows**2, axis=1)[:, None]
  squared += points_squared_norms[None, :]
  return np.maximum(squared, 0.0, out=squared)


def _kth_smallest_per_row(values: np.ndarray, k: int) -> np.ndarray:
  """The k-th smallest entry of each row (k = 1 is the minimum); overwrites `values`.

  k − 1 rounds of "remove the row minimum" then a minimum: for the small k of k-NN this is several times
  faster than np.partition on float64 blocks.
  """
  rows = np.arange(len(values))
  for _ in range(k - 1):
    values[rows, np.argmin(values, axis=1)] = np.inf
  return values.min(axis=1)


def _squared_knn_radii(points: np.ndarray, k: int, done=lambda: None) -> np.ndarray:
  """Squared distance from each point to its k-th nearest other point of the same set; `done()` per block."""
  norms = np.sum(points**2, axis=1)
  radii = np.empty(len(points))
  for start in range(0, len(points), DISTANCE_CHUNK_ROWS):
    stop = min(start + DISTANCE_CHUNK_ROWS, len(points))
    squared = _squared_distances(points[start:stop], points, norms)
    # The point itself is no neighbour; duplicates of it are, at distance 0.
    squared[np.arange(stop - start), np.arange(start, stop)] = np.inf
    radii[start:stop] = _kth_smallest_per_row(squared, k)
    done()
  return radii


def _block_counter(label, total):
  """done() -> reports one more block of `total` on a progress line (10k × 10k sets take minutes)."""
  progress, count = Progress(label, total), [0]

  def done():
    count[0] += 1
    progress.update(count[0])

  return done


def precision_recall(real_features, fake_features, k: int = PR_K) -> tuple[float, float]:
  """(precision, recall) of fake against real feature vectors by k-NN manifolds (Kynkäänniemi et al. 2019).

  precision: share of fake vectors within distance r_j of some real vector j, r_j its k-th nearest real
  neighbour distance; recall: the same with the roles swapped. A point on a ball's boundary is inside.
  """
  real, fake = np.asarray(real_features, np.float64), np.asarray(fake_features, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise UserError(f"feature sets of shapes {real.shape} and {fake.shape}; allowed: (N, F) and (M, F)")
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or min(len(real), len(fake)) <= k:
    raise UserError(f"k={k!r} with {len(real)} real and {len(fake)} fake vectors; allowed: 1 <= k < the "
                    "size of each set")
  center = real.mean(axis=0)  # Smaller norms, less cancellation in |a|² + |b|² − 2ab.
  real, fake = real - center, fake - center
  blocks = lambda points: -(-len(points) // DISTANCE_CHUNK_ROWS)
  done = _block_counter("precision and recall, distance blocks", blocks(real) + 2 * blocks(fake))
  real_radii, fake_radii = _squared_knn_radii(real, k, done), _squared_knn_radii(fake, k, done)
  real_norms = np.sum(real**2, axis=1)
  fake_in_real_manifold = np.zeros(len(fake), bool)
  real_in_fake_manifold = np.zeros(len(real), bool)
  for start in range(0, len(fake), DISTANCE_CHUNK_ROWS):  # One block serves both directions.
    stop = min(start + DISTANCE_CHUNK_ROWS, len(fake))
    squared = _squared_distances(fake[start:stop], real, real_norms)
    fake_in_real_manifold[start:stop] = np.any(squared <= real_radii[None, :], axis=1)
    real_in_fake_manifold |= np.any(squared <= fake_radii[start:stop, None], axis=0)
    done()
  return float(fake_in_real_manifold.mean()), float(real_in_fake_manifold.mean())


# --- Reference statistics and floors, cached beside the classifier ----------------------------------------


def reference_statistics(classifier, dataset: str, data_dir: Optional[str], split: str) -> dict:
  """{'mean', 'cov' (float64), 'features' (first PR_MAX_EXAMPLES, float32), 'num_examples'} of a split."""
  path = os.path.join(classifier.checkpoint_dir, f"reference-{split}.npz")
  if os.path.exists(path):
    with np.load(path) as cached:
      return {name: cached[name] for name in cached.files}
  images = load_split(dataset, split, data_dir=data_dir, image_size=classifier.info["image_size"]).images
  progress = Progress(f"classifier features of the {split} split, images", len(images))
  features = []
  for start in range(0, len(images), 10000):  # In slices, so 60k float32 images never sit in memory at once.
    features.append(classifier.features(images[start:start + 10000].astype(np.float32) / 255.0))
    progress.update(min(start + 10000, len(images)))
  features = np.concatenate(features)
  mean, cov = gaussian_statistics(features)
  statistics = {"mean": mean, "cov": cov, "features": features[:PR_MAX_EXAMPLES],
                "num_examples": np.int64(len(features))}
  files.write_cache(path, lambda f: np.savez(f, **statistics), mode="wb")  # Rebuilt if it cannot be kept.
  return statistics


def _score_features(features, reference: dict, k: int) -> dict:
  mean, cov = gaussian_statistics(features)
  n = min(len(features), len(reference["features"]))
  precision, recall = precision_recall(reference["features"][:n], features[:n], k)
  return {"fcd": frechet_distance(mean, cov, reference["mean"], reference["cov"]), "precision": precision,
          "recall": recall, "pr_num_samples": n}


def real_data_floor(classifier, dataset: str, data_dir: Optional[str], reference_split: str,
                    num_samples: int, k: int = PR_K) -> dict:
  """The scores of `num_samples` real images of the other split against the reference (cached)."""
  other_split = "test" if reference_split == "train" else "train"
  other = reference_statistics(classifier, dataset, data_dir, other_split)
  count = min(num_samples, len(other["features"]))
  key = f"{other_split}_vs_{reference_split}:n={count}:k={k}"
  path = os.path.join(classifier.checkpoint_dir, FLOORS_FILE)
  floors = {}
  if os.path.exists(path):
    with open(path) as f:
      floors = json.load(f)
  if key not in floors:
    reference = reference_statistics(classifier, dataset, data_dir, reference_split)
    floors[key] = _score_features(other["features"][:count], reference, k) | {"num_samples": count}
    files.write_cache(path, lambda f: json.dump(floors, f, indent=1))
  return floors[key]


# --- Scoring samples ----------------------------------------------------------------------------------------


def load_samples_file(path: str) -> np.ndarray:
  """The array in a .npy file (a run's samples.npy), without running pickled code."""
  if not os.path.isfile(path):
    raise UserError(f"samples file {path} does not exist; allowed: a .npy file of images (N, H, W, C) in [0, 1]")
  with open(path, "rb") as f:
    is_npy = f.read(6) == b"\x93NUMPY"  # The .npy magic; anything else (an .npz, text) is not one array.
  if not is_npy:
    raise UserError(f"samples file {path} is not a .npy file; allowed: a .npy file of images (N, H, W, C) "
                    "in [0, 1], as np.save writes it")
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError) as error:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    raise UserError(f"samples file {path} is not a readable .npy array ({first_line}); allowed: a .npy "
                    "file of images (N, H, W, C) in [0, 1]") from None


def check_samples(samples01, image_shape, num_samples: Optional[int] = None) -> np.ndarray:
  """The first `num_samples` samples as float32 (N, H, W, C), after checking shape and range."""
  samples = np.asarray(samples01)
  if samples.dtype.kind not in "fiu" or samples.ndim != 4 or samples.shape[1:] != tuple(image_shape):
    raise UserError(f"samples of shape {samples.shape} and dtype {samples.dtype}; allowed: float images "
                    f"(N, {', '.join(map(str, image_shape))}) in [0, 1], as in samples.npy")
  if num_samples is not None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
      raise UserError(f"num_samples {num_samples!r} is not allowed; allowed: a positive integer or None (all)")
    if num_samples > len(samples):
      raise UserError(f"num_samples {num_samples} but only {len(samples)} samples; allowed: at most "
                      f"{len(samples)}")
    samples = samples[:num_samples]
  if len(samples) <= PR_K:
    raise UserError(f"{len(samples)} samples; allowed: at least {PR_K + 1} (precision/recall use the "
                    f"{PR_K}-th nearest neighbour)")
  samples = samples.astype(np.float32)
  low, high = float(samples.min()), float(samples.max())
  if not (np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0):
    raise UserError(f"samples range from {low} to {high}; allowed: values in [0, 1] (images in data space)")
  return samples


def score_samples(samples01, dataset: str, data_dir: Optional[str] = None, num_samples: Optional[int] = None,
                  reference_split: str = "train", *, image_size: Optional[int] = None,
                  classifier: Optional[classifier_lib.Classifier] = None) -> dict:
  """fcd, precision and recall of samples, their real-data floors, and the provenance of the numbers.

  Args:
    samples01: (N, H, W, C) images in [0, 1], e.g. a run's samples.npy.
    dataset: the dataset the model was trained on; its classifier is loaded (or trained once, ~10-20 s).
    data_dir: TFDS data dir of the dataset and of the classifier cache (None: TFDS's default).
    num_samples: score only the first N samples (None: all).
    reference_split: the real images the samples are compared with, 'train' or 'test'.
    image_size: the image side the classifier works at (None: the dataset's own).
    classifier: a classifier to use instead of the dataset's default one (e.g. `load_classifier(dir)`).

  Returns:
    {'fcd', 'precision', 'recall', 'fcd_floor', 'precision_floor', 'recall_floor', 'num_samples',
     'pr_num_samples', 'pr_k', 'floor_num_samples', 'reference_split', 'classifier_checkpoint',
     'classifier_test_accuracy'}.
  """
  if reference_split not in SPLITS:
    raise UserError(f"reference_split {reference_split!r} is unknown; allowed: {', '.join(SPLITS)}")
  if classifier is None:
    classifier = classifier_lib.load_or_train_classifier(dataset, data_dir, image_size)
  else:
    classifier.check_trained_on(dataset)
  samples = check_samples(samples01, classifier.image_shape, num_samples)
  reference = reference_statistics(classifier, dataset, data_dir, reference_split)
  scores = _score_features(classifier.features(samples), reference, PR_K)
  floor = real_data_floor(classifier, dataset, data_dir, reference_split, len(samples), PR_K)
  return {
      "fcd": scores["fcd"], "precision": scores["precision"], "recall": scores["recall"],
      "fcd_floor": floor["fcd"], "precision_floor": floor["precision"], "recall_floor": floor["recall"],
      "num_samples": len(samples), "pr_num_samples": scores["pr_num_samples"], "pr_k": PR_K,
      "floor_num_samples": floor["num_samples"], "reference_split": reference_split,
      "classifier_checkpoint": classifier.checkpoint_dir,
      "classifier_test_accuracy": classifier.test_accuracy,
  }


def summary_line(scores: dict) -> str:
  """One line for a terminal: each score beside its floor, then the provenance."""
  return (f"fcd {scores['fcd']:.3f} (floor {scores['fcd_floor']:.3f})  "
          f"precision {scores['precision']:.4f} (floor {scores['precision_floor']:.4f})  "
          f"recall {scores['recall']:.4f} (floor {scores['recall_floor']:.4f})  "
          f"[{scores['num_samples']} samples vs {scores['reference_split']}, k={scores['pr_k']}, classifier "
          f"{scores['classifier_checkpoint']} at {scores['classifier_test_accuracy']:.2%} test accuracy]")
