"""k-means clusters of a dataset's images: labels found without labels.

The self-conditioned GAN (Liu et al., "Diverse Image Generation via Self-Conditioned GANs", CVPR 2020) trains a
conditional GAN on cluster indices and samples p(x) = Σ_c p(c) p(x | c) with p(c) each cluster's share of the
data. Clustering the pixels is the simplest form of it: no labels and no pretrained features, only matmuls.
"""

import jax
import jax.numpy as jnp
import numpy as np

# A fixed count, not convergence: Fashion-MNIST at K = 50 still moves ~2,000 of its 60,000 images between
# iterations 30 and 40. Conditioning needs a fixed partition into look-alike groups, not k-means's optimum.
LLOYD_ITERATIONS = 40


def kmeans(points, num_clusters, seed, iterations=LLOYD_ITERATIONS):
  """Lloyd's algorithm on `points` (N, D): (assignments (N,) int32, centroids (K, D) float32).

  It starts from `num_clusters` distinct points drawn with numpy's `default_rng(seed)` and runs a fixed number
  of iterations, so a run that resumes recomputes the same clusters. A cluster that loses all its points
  keeps its centroid. Squared distances are ‖x‖² − 2 x·c + ‖c‖², one matmul per iteration.
  """
  points = jnp.asarray(points, jnp.float32)
  first = np.random.default_rng(seed).choice(len(points), num_clusters, replace=False)
  squared_norms = jnp.sum(points**2, axis=1)

  def nearest(centroids):
    distances = squared_norms[:, None] - 2.0 * points @ centroids.T + jnp.sum(centroids**2, axis=1)
    return jnp.argmin(distances, axis=1).astype(jnp.int32)

  def lloyd_step(centroids, _):
    members = jax.nn.one_hot(nearest(centroids), num_clusters, dtype=points.dtype)
    counts = jnp.sum(members, axis=0)
    means = (members.T @ points) / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, means, centroids), None

  @jax.jit
  def run(centroids):
    centroids = jax.lax.scan(lloyd_step, centroids, None, length=iterations)[0]
    return nearest(centroids), centroids

  assignments, centroids = run(points[first])
  return np.asarray(assignments), np.asarray(centroids)


def shares(assignments, num_clusters):
  """Each cluster's share of the points, (K,) float64 summing to 1."""
  return np.bincount(assignments, minlength=num_clusters) / len(assignments)
