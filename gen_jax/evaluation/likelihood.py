"""Test log-likelihood as papers report it: the importance-weighted bound L_k with large k (k = 5000).

log p(x) ≥ L_k = E[log (1/k) Σ_i p(x, z_i) / q(z_i | x)], and L_k → log p(x) as k grows (Burda et al.
2016), so the k = 5000 bound is the log-likelihood estimate of the VAE literature. Also here: bits per
dimension and the number of active latent units.

How it stays fast: the recognition network's image-dependent part runs once per image (`encode`); the k
samples then go through the rest of the model `rows` at a time, as (samples × images, d) matrices, which
turns the decoder into large matmuls. The per-example log-sum-exp is accumulated over sample chunks with
`logaddexp`, so memory is bounded by one chunk whatever k is, and the result is exact (not an average of
per-chunk bounds, which would be a looser L_{chunk}).

The model is described by three pure functions, so the one- and two-stochastic-layer VAEs share this code:
  encode(params, x, labels) -> encoded: what depends only on the image (e.g. q(z|x)'s mean, log-variance).
  log_weights(params, encoded, x, labels, key, num_samples) -> (num_samples, batch) log p(x, z) − log q(z|x).
  posterior_means(params, encoded, key) -> tuple with one (batch, d_l) array E_q[z_l | x] per stochastic layer.
"""

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import parallel, salts
from gen_jax.data import image_data, preprocessing
from gen_jax.progress import Progress

DEFAULT_IWAE_K = 5000
# Burda et al. (2016), Sec. 5.2: unit u is active when Cov_x(E_{u~q(u|x)}[u]) > 10^-2.
ACTIVE_UNIT_THRESHOLD = 1e-2
# Decoder rows (samples × images) per chunk: large enough for matmuls at full speed, small enough that the
# (rows, pixels) logits stay in cache-friendly tens of megabytes.
DEFAULT_ROWS_PER_CHUNK = 4096


def log_mean_exp_in_chunks(log_weights_fn, key, num_samples, samples_per_chunk, batch_size):
  """log (1/k) Σ_i exp(log w_i) per example, with the k weights drawn `samples_per_chunk` at a time.

  `log_weights_fn(key, n) -> (n, batch_size)`; chunk c uses fold_in(key, c). A last, partial chunk is
  padded with draws whose weights are masked to −inf, so any k works with one compiled chunk shape.
  """
  num_chunks = -(-num_samples // samples_per_chunk)

  def body(total, index):
    log_weights = log_weights_fn(jax.random.fold_in(key, index), samples_per_chunk)
    valid = index * samples_per_chunk + jnp.arange(samples_per_chunk) < num_samples
    log_weights = jnp.where(valid[:, None], log_weights, -jnp.inf)
    return jnp.logaddexp(total, jax.nn.logsumexp(log_weights, axis=0)), None

  initial = jnp.full((batch_size,), -jnp.inf, jnp.float32)
  if num_chunks == 1:  # Straight-line code: XLA's CPU convolutions are very slow inside a loop (JAX #12868).
    total, _ = body(initial, 0)
  else:
    total, _ = jax.lax.scan(body, initial, jnp.arange(num_chunks))
  return total - math.log(num_samples)


def is_discrete(likelihood, binarization):
  """Whether bits per dimension mean something: only for discrete data, binarised pixels under a Bernoulli
  decoder (a density of continuous pixels can exceed 1)."""
  return likelihood == "bernoulli" and binarization != "none"


def bits_per_dim(log_likelihood_nats, num_dims):
  """−log p(x) / (D ln 2): nats per example to bits per pixel value, for discrete data."""
  return -log_likelihood_nats / (num_dims * math.log(2.0))


def count_active_units(mean_sum, mean_square_sum, count, threshold=ACTIVE_UNIT_THRESHOLD):
  """Units whose Cov_x(E_q[u | x]) exceeds `threshold`, from the sums of E_q[u|x] and its square over x."""
  mean = np.asarray(mean_sum, np.float64) / count
  variance = np.asarray(mean_square_sum, np.float64) / count - mean**2
  return int(np.sum(variance > threshold))


@dataclasses.dataclass(frozen=True)
class LatentVariableModel:
  """The three functions that describe a model to the evaluator (see the module docstring)."""
  encode: Callable[..., Any]
  log_weights: Callable[..., jax.Array]
  posterior_means: Callable[..., tuple]


def _bound_and_encoding(params, x, labels, key, model, num_samples, samples_per_chunk):
  """L_k per image (the k samples drawn in chunks) and the encoder's output."""
  encoded = model.encode(params, x, labels)
  log_weights_fn = functools.partial(model.log_weights, params, encoded, x, labels)
  return log_mean_exp_in_chunks(log_weights_fn, key, num_samples, samples_per_chunk, x.shape[0]), encoded


def _chunk_statistics(params, x, labels, mask, key, model, num_samples, samples_per_chunk):
  """Masked sums over one chunk of images: L_k and the per-layer E_q[z|x] and its square."""
  encode_key, means_key = jax.random.split(key)
  bound, encoded = _bound_and_encoding(params, x, labels, encode_key, model, num_samples, samples_per_chunk)
  means = model.posterior_means(params, encoded, means_key)
  return {"log_likelihood": jnp.sum(bound * mask),
          "mean_sums": [jnp.sum(m * mask[:, None], axis=0) for m in means],
          "mean_square_sums": [jnp.sum(m**2 * mask[:, None], axis=0) for m in means]}


def make_log_likelihood_evaluator(model, images, labels, num_samples, mesh, seed, images_per_chunk=100,
                                  rows_per_chunk=DEFAULT_ROWS_PER_CHUNK, discrete=True):
  """evaluate(params) -> {log_likelihood, iwae_k, [bits_per_dim], active_units[, active_units_<l>]}.

  `images` are the test split as uint8 (already binarised where the run binarises), scaled to [0, 1] here.
  The key is a function of `seed`, so two evaluations of the same parameters agree exactly. With
  `discrete`, the data are binary and bits per dimension are reported as well.
  """
  parallel.check_batch_divisible(images_per_chunk, mesh)
  samples_per_chunk = max(1, min(num_samples, rows_per_chunk // images_per_chunk))
  statistics_fn = jax.jit(functools.partial(_chunk_statistics, model=model, num_samples=num_samples,
                                            samples_per_chunk=samples_per_chunk))
  sharding = parallel.batch_sharded(mesh)
  evaluation_key = salts.key_for(seed, salts.LIKELIHOOD)
  num_dims = int(np.prod(images.shape[1:]))

  def evaluate(params):
    totals = None
    chunks = image_data.evaluation_chunks(len(images), images_per_chunk)
    progress = Progress(f"test log-likelihood, k={num_samples}, images", len(images))
    for index, (start, stop) in enumerate(chunks):
      x, mask = image_data.padded_chunk(images, start, stop, images_per_chunk)
      chunk_labels = None if labels is None else parallel.global_array(
          image_data.padded_chunk(labels, start, stop, images_per_chunk)[0], sharding)
      statistics = jax.device_get(statistics_fn(
          params, preprocessing.to_unit_interval(parallel.global_array(x, sharding)), chunk_labels,
          parallel.global_array(mask, sharding), jax.random.fold_in(evaluation_key, index)))
      statistics = jax.tree.map(lambda value: np.asarray(value, np.float64), statistics)
      totals = statistics if totals is None else jax.tree.map(np.add, totals, statistics)
      progress.update(stop)
    log_likelihood = float(totals["log_likelihood"]) / len(images)
    result = {"log_likelihood": log_likelihood, "iwae_k": num_samples}
    if discrete:
      result["bits_per_dim"] = bits_per_dim(log_likelihood, num_dims)
    per_layer = [count_active_units(s, s2, len(images))
                 for s, s2 in zip(totals["mean_sums"], totals["mean_square_sums"])]
    result["active_units"] = sum(per_layer)
    if len(per_layer) > 1:
      result |= {f"active_units_{layer + 1}": count for layer, count in enumerate(per_layer)}
    return result

  return evaluate


def make_per_example_log_likelihood(model, num_samples, images_per_chunk=100,
                                    rows_per_chunk=DEFAULT_ROWS_PER_CHUNK):
  """log_likelihood(params, x, labels, seed) -> L_k of each image of `x` (float, in [0, 1]), numpy (N,), the
  k samples keyed by `seed`. One compiled chunk shape, reused by every call."""
  samples_per_chunk = max(1, min(num_samples, rows_per_chunk // images_per_chunk))
  bound_fn = jax.jit(lambda params, x, labels, key: _bound_and_encoding(
      params, x, labels, key, model, num_samples, samples_per_chunk)[0])

  def log_likelihood(params, x, labels, seed):
    key = salts.key_for(seed, salts.LIKELIHOOD)
    bounds = []
    progress = Progress(f"log-likelihood, k={num_samples}, images", len(x))
    for index, (start, stop) in enumerate(image_data.evaluation_chunks(len(x), images_per_chunk)):
      chunk, _ = image_data.padded_chunk(x, start, stop, images_per_chunk)
      chunk_labels = (None if labels is None
                      else image_data.padded_chunk(labels, start, stop, images_per_chunk)[0])
      bound = bound_fn(params, chunk, chunk_labels, jax.random.fold_in(key, index))
      bounds.append(np.asarray(bound)[:stop - start])
      progress.update(stop)
    return np.concatenate(bounds) if bounds else np.zeros((0,), np.float32)

  return log_likelihood
