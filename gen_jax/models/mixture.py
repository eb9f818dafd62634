"""A diagonal mixture baseline fitted by EM: a mixture of Gaussians or of Bernoullis, in JAX.

The lecture's point: a VAE is an infinite mixture p(x) = ∫ p(x|z) p(z) dz, so a finite mixture with K
components is the natural baseline for its test log-likelihood (same data, same nats per example).

Likelihoods (per component k, pixels d independent):
  bernoulli: p(x | k) = Π_d μ_kd^x_d (1 − μ_kd)^(1−x_d), for binarised data;
  gaussian:  p(x | k) = Π_d N(x_d; μ_kd, σ²_kd), for continuous data.
Both are linear in x (and x²) inside the log, so the E-step is one or two matmuls of the data with the
component parameters and the M-step accumulates Σ r, Σ r·x (and Σ r·(x − m)², around the prior means m)
over data chunks. Those matmuls keep float32 on accelerators too (`objectives.full_precision_matmul`): the
Gaussian's expanded squares and its variance update cancel large terms, which is also why both are expanded
around m rather than 0.

Every parameter has a conjugate prior worth `pseudo_count` (c) examples, and EM maximises the posterior
(MAP-EM), which keeps components that see no data, and pixels that are always 0 in a component, finite (a
Bernoulli μ that float32 would round to 1 is held just below it, see `_Bernoulli.representable_means`):
  π ~ Dirichlet(1 + c):                      π_k = (N_k + c) / (N + K c)
  μ_kd ~ Beta(c·m_d + 1, c·(1 − m_d) + 1):   μ_kd = (Σ r x + c m_d) / (N_k + c)           (bernoulli)
  μ_kd | σ² ~ N(m_d, σ²/c), σ² with weight c around v_d:
                                            μ_kd = (Σ r x + c m_d) / (N_k + c),
                                            σ²_kd = (Σ r (x − μ)² + c (μ − m_d)² + c v_d) / (N_k + c)
with m, v the data's per-pixel mean and variance. Each M-step is the exact maximiser of the expected
complete-data log posterior, so `objective` (mean log-likelihood + log prior / N) never decreases.
"""

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import objectives

_LARGEST_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
# A floor on the prior variance v_d: a pixel that is constant in the data (a border pixel is always 0)
# would otherwise let σ² → 0 and the density of the continuous model grow without bound.
MIN_PRIOR_VARIANCE = 1e-3


@flax.struct.dataclass
class MixtureState:
  """The fitted mixture; `step` counts EM iterations (the training loop keys and checkpoints by it)."""
  step: jax.Array
  log_mixing: jax.Array  # (K,) log π
  means: jax.Array  # (K, D) μ (probabilities for bernoulli)
  variances: jax.Array  # (K, D) σ² (gaussian; bernoulli keeps its start, v, and never reads it)
  prior_means: jax.Array  # (D,) m
  prior_variances: jax.Array  # (D,) v


@flax.struct.dataclass
class _Statistics:
  count: jax.Array  # (K,) Σ_n r_nk
  sum_x: jax.Array  # (K, D) Σ_n r_nk x_n
  sum_x2: jax.Array  # (K, D) Σ_n r_nk (x_n − m)², m the prior means (gaussian only; zeros for bernoulli)
  log_likelihood: jax.Array  # () Σ_n log p(x_n)


class _Bernoulli:
  """p(x | k) = Π_d μ_kd^x_d (1 − μ_kd)^(1−x_d) with a Beta prior on each μ_kd; no variances."""

  @staticmethod
  def representable_means(means):
    # A pixel on in every image of a component (white backgrounds) has a MAP μ within 1e-9 of 1, which float32
    # rounds to 1: log(1 − μ) would be −inf and every later E-step NaN. The largest float32 below 1 keeps
    # log(1 − μ) ≥ −16.6 (a valid Bernoulli, slightly less sure than the exact MAP). The other side needs
    # nothing: μ ≥ c·m/(N_k + c) with m ≥ 1/(N + 2) stays far above float32's smallest normal number.
    return jnp.minimum(means, _LARGEST_BELOW_ONE)

  @staticmethod
  def prior_means(x):
    # (Σx + 1)/(N + 2), strictly inside (0, 1), so a pixel never on in the data keeps μ > 0.
    return (jnp.sum(x, axis=0) + 1.0) / (x.shape[0] + 2.0)

  @staticmethod
  def initial_means(picked, prior_means):
    # Half-way to the data mean, so that no probability starts at 0 or 1.
    return 0.5 * picked + 0.5 * jnp.clip(prior_means, 0.05, 0.95)

  @staticmethod
  def log_densities(state, x):
    log_on, log_off = jnp.log(state.means), jnp.log1p(-state.means)
    return objectives.full_precision_matmul(x, (log_on - log_off).T) + jnp.sum(log_off, axis=-1)

  @staticmethod
  def second_moments(responsibilities, x, state):
    del responsibilities, x
    return jnp.zeros_like(state.means)

  @staticmethod
  def log_prior(state, c):
    m = state.prior_means
    return c * jnp.sum(m * jnp.log(state.means) + (1.0 - m) * jnp.log1p(-state.means))

  @staticmethod
  def variances(state, totals, means, count, c):
    del totals, means, count, c
    return state.variances


class _Gaussian:
  """p(x | k) = Π_d N(x_d; μ_kd, σ²_kd) with a normal prior on μ given σ² and a weight-c prior on σ².

  The squares are expanded around the prior means m (the data's per-pixel mean), x − m and μ − m: a pixel
  nearly constant at a value away from 0 gets σ² ~ 1e-3/N_k, and expanded around 0 its terms x²/σ² and
  2xμ/σ² would reach ~1e7 and cancel to nothing in float32 (hundreds of nats off on such data).
  """

  @staticmethod
  def representable_means(means):
    return means

  @staticmethod
  def prior_means(x):
    return jnp.mean(x, axis=0)

  @staticmethod
  def initial_means(picked, prior_means):
    del prior_means
    return picked

  @staticmethod
  def log_densities(state, x):
    return objectives.pairwise_gaussian_log_densities(x, state.means, jnp.log(state.variances), state.prior_means)

  @staticmethod
  def second_moments(responsibilities, x, state):
    return objectives.full_precision_matmul(responsibilities.T, (x - state.prior_means)**2)

  @staticmethod
  def log_prior(state, c):
    deviation = c * (state.means - state.prior_means)**2 + c * state.prior_variances
    return -0.5 * jnp.sum(c * jnp.log(state.variances) + deviation / state.variances)

  @staticmethod
  def variances(state, totals, means, count, c):
    # Σ r (x − μ)² around the prior means too: Σ r (x−m)² − 2(μ−m) Σ r (x−m) + (μ−m)² Σ r.
    centred_means = means - state.prior_means
    centred_sums = totals.sum_x - state.prior_means * count
    squared_deviations = totals.sum_x2 - 2.0 * centred_means * centred_sums + centred_means**2 * count
    return ((jnp.maximum(squared_deviations, 0.0) + c * (means - state.prior_means)**2
             + c * state.prior_variances) / (count + c))


# name -> the likelihood's parts: its prior's centre, initial means, means float32 can hold, log p(x | k) as
# matmuls, the Σ r·(x − m)² its M-step needs, its log prior and its variance update.
LIKELIHOODS = {"bernoulli": _Bernoulli, "gaussian": _Gaussian}


def initialize(key, x, num_components, likelihood):
  """π uniform; μ at K distinct random data points (for bernoulli pulled half-way to the prior centre m,
  clipped to [0.05, 0.95], so that no probability starts at 0 or 1); σ² at the prior variance."""
  parts = LIKELIHOODS[likelihood]
  prior_means = parts.prior_means(x)
  prior_variances = jnp.var(x, axis=0) + MIN_PRIOR_VARIANCE
  picks = jax.random.choice(key, x.shape[0], (num_components,), replace=num_components > x.shape[0])
  means = parts.initial_means(x[picks], prior_means)
  variances = jnp.broadcast_to(prior_variances, means.shape)
  return MixtureState(jnp.zeros((), jnp.int32), jnp.full((num_components,), -math.log(num_components)),
                      means, variances, prior_means, prior_variances)


def component_log_densities(state, x, likelihood):
  """log p(x_n | k), shape (n, K), as matmuls of x (and x²) with the component parameters."""
  return LIKELIHOODS[likelihood].log_densities(state, x)


def log_likelihood(state, x, likelihood):
  """log p(x_n) = log Σ_k π_k p(x_n | k) per example."""
  return jax.nn.logsumexp(state.log_mixing + component_log_densities(state, x, likelihood), axis=-1)


def _chunk_statistics(state, x, weights, likelihood):
  """E-step on one chunk; `weights` masks padding rows (0) out of every sum."""
  joint = state.log_mixing + component_log_densities(state, x, likelihood)
  per_example = jax.nn.logsumexp(joint, axis=-1)
  responsibilities = jnp.exp(joint - per_example[:, None]) * weights[:, None]
  return _Statistics(jnp.sum(responsibilities, axis=0), objectives.full_precision_matmul(responsibilities.T, x),
                     LIKELIHOODS[likelihood].second_moments(responsibilities, x, state),
                     jnp.sum(per_example * weights))


def log_prior(state, pseudo_count, likelihood):
  """log p(π, μ, σ²) up to a constant, for the priors in the module docstring."""
  return pseudo_count * jnp.sum(state.log_mixing) + LIKELIHOODS[likelihood].log_prior(state, pseudo_count)


def em_step(state, chunks, weights, pseudo_count, likelihood):
  """One EM iteration over data `chunks` (num_chunks, n, D) with masks `weights` (num_chunks, n).

  Returns the new state and the metrics of the *incoming* parameters (the E-step is where their
  likelihood is computed): `log_likelihood` (mean nats per example) and `objective` (+ log prior / N).
  """
  def accumulate(totals, chunk):
    statistics = _chunk_statistics(state, chunk[0], chunk[1], likelihood)
    return jax.tree.map(jnp.add, totals, statistics), None

  num_components, num_dims = state.means.shape
  zeros = _Statistics(jnp.zeros(num_components), jnp.zeros((num_components, num_dims)),
                      jnp.zeros((num_components, num_dims)), jnp.zeros(()))
  totals, _ = jax.lax.scan(accumulate, zeros, (chunks, weights))
  num_examples = jnp.sum(weights)
  c = pseudo_count
  log_mixing = jnp.log(totals.count + c) - jnp.log(num_examples + num_components * c)
  count = totals.count[:, None]
  means = LIKELIHOODS[likelihood].representable_means((totals.sum_x + c * state.prior_means) / (count + c))
  variances = LIKELIHOODS[likelihood].variances(state, totals, means, count, c)
  mean_log_likelihood = totals.log_likelihood / num_examples
  metrics = {"log_likelihood": mean_log_likelihood,
             "objective": mean_log_likelihood + log_prior(state, c, likelihood) / num_examples}
  new_state = state.replace(step=state.step + 1, log_mixing=log_mixing, means=means, variances=variances)
  return new_state, metrics
