"""Training objectives as pure functions, in nats per example.

Every objective returns `(loss, metrics)`: a scalar to minimise and a dict of per-batch means of every term,
so that what is optimised and what is reported can never drift apart. Per-example values are kept until the
final mean.

Conventions: `x` is data in [0, 1] with shape (batch, *event_shape); decoder outputs carry the same leading
shape. Log-densities are summed over the event dimensions.
"""

import math

import jax
import jax.numpy as jnp

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")
_LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(values, batch_ndim=1):
  """Sums over every axis after the first `batch_ndim` ones (the event axes)."""
  return jnp.sum(values, axis=tuple(range(batch_ndim, values.ndim)))


def kl_to_standard_normal(mean, log_variance):
  """KL(N(mean, diag(exp(log_variance))) || N(0, I)) in closed form, summed over the last axis.

  Per dimension: ½(σ² + μ² − 1 − log σ²). The σ-part, ½(exp(s) − (1 + s)) with s = log σ², is the
  lecture's "exp(σ) − (1 + σ)" curve: non-negative, zero only at s = 0, i.e. unit variance.
  """
  mean = mean.astype(jnp.float32)
  log_variance = log_variance.astype(jnp.float32)
  return 0.5 * jnp.sum(jnp.exp(log_variance) + mean**2 - 1.0 - log_variance, axis=-1)


def gaussian_log_density(z, mean, log_variance):
  """log N(z; mean, diag(exp(log_variance))), summed over the last axis."""
  return -0.5 * jnp.sum(_LOG_2PI + log_variance + (z - mean)**2 * jnp.exp(-log_variance), axis=-1)


def standard_normal_log_density(z):
  """log N(z; 0, I), summed over the last axis."""
  return -0.5 * jnp.sum(_LOG_2PI + z**2, axis=-1)


def reparameterize(key, mean, log_variance, num_samples=None):
  """z = μ + exp(½ log σ²)·ε with ε ~ N(0, I) drawn from `key`.

  With `num_samples=k` the result has a leading axis of k samples per example.
  """
  shape = mean.shape if num_samples is None else (num_samples, *mean.shape)
  epsilon = jax.random.normal(key, shape, dtype=mean.dtype)
  return mean + jnp.exp(0.5 * log_variance) * epsilon


def _log_normalizer_continuous_bernoulli(logits):
  """log C(λ) for the continuous Bernoulli with λ = sigmoid(logits).

  C(λ) = 2·atanh(1 − 2λ)/(1 − 2λ) = η / tanh(η/2) with η the logit, an even function equal to 2 at η = 0.
  Near 0 the ratio is 0/0, so a Taylor expansion (2 + η²/6) is used there.
  """
  magnitude = jnp.abs(logits)
  small = magnitude < 1e-2
  safe = jnp.where(small, 1.0, magnitude)
  exact = jnp.log(safe) - jnp.log(jnp.tanh(0.5 * safe))
  taylor = jnp.log(2.0 + magnitude**2 / 6.0)
  return jnp.where(small, taylor, exact)


def log_likelihood(likelihood, decoder_output, x, batch_ndim=1, gaussian_std=None):
  """log p(x | z) for each example, summed over the event axes.

  - "bernoulli": `decoder_output` are logits; log p = x·η − softplus(η). Also valid for x in [0, 1], where
    it is the negative binary cross-entropy (the pytorch/examples VAE objective).
  - "continuous_bernoulli": logits of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), a proper
    density on [0, 1]: the Bernoulli term plus log C(λ).
  - "gaussian": with `gaussian_std` set, `decoder_output` is the mean and the standard deviation is fixed;
    otherwise `decoder_output` stacks (mean, log-variance) on its last axis (learned per-pixel variance).
  """
  x = x.astype(jnp.float32)
  decoder_output = decoder_output.astype(jnp.float32)
  if likelihood == "bernoulli":
    log_p = x * decoder_output - jax.nn.softplus(decoder_output)
  elif likelihood == "continuous_bernoulli":
    log_p = (x * decoder_output - jax.nn.softplus(decoder_output)
             + _log_normalizer_continuous_bernoulli(decoder_output))
  elif likelihood == "gaussian":
    if gaussian_std is None:
      mean, log_variance = jnp.split(decoder_output, 2, axis=-1)
    else:
      mean, log_variance = decoder_output, jnp.full_like(decoder_output, 2.0 * math.log(gaussian_std))
    log_p = -0.5 * (_LOG_2PI + log_variance + (x - mean)**2 * jnp.exp(-log_variance))
  else:
    raise ValueError(f"unknown likelihood {likelihood!r}; allowed: {', '.join(LIKELIHOODS)}")
  return _sum_event(log_p, batch_ndim)


def decoder_mean(likelihood, decoder_output, gaussian_std=None):
  """E[x | z] in data space, for pictures of reconstructions and samples."""
  decoder_output = decoder_output.astype(jnp.float32)
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(decoder_output)
  if likelihood == "continuous_bernoulli":
    # Mean λ/(2λ−1) + 1/(2·atanh(1−2λ)) = sigmoid(η)/tanh(η/2) − 1/η; 0/0 at η = 0, where it is ½ + η/12.
    small = jnp.abs(decoder_output) < 1e-2
    safe = jnp.where(small, 1.0, decoder_output)
    exact = jax.nn.sigmoid(safe) / jnp.tanh(0.5 * safe) - 1.0 / safe
    return jnp.where(small, 0.5 + decoder_output / 12.0, exact)
  if likelihood == "gaussian":
    mean = decoder_output if gaussian_std is not None else jnp.split(decoder_output, 2, axis=-1)[0]
    return jnp.clip(mean, 0.0, 1.0)
  raise ValueError(f"unknown likelihood {likelihood!r}; allowed: {', '.join(LIKELIHOODS)}")


def elbo_terms(recon, kl, kl_weight=1.0):
  """Loss and metrics from per-example recon = E_q[log p(x|z)] and kl = KL(q(z|x) || p(z)).

  The loss weights the KL by `kl_weight` (β, times a warm-up factor), but the reported `elbo` is always the
  true bound recon − kl, so curves stay comparable across β.
  """
  elbo = recon - kl
  loss = -jnp.mean(recon - kl_weight * kl)
  return loss, {"elbo": jnp.mean(elbo), "recon": jnp.mean(recon), "kl": jnp.mean(kl)}


def kl_weight_schedule(step, beta=1.0, warmup_steps=0):
  """β times a linear warm-up from 0 to 1 over `warmup_steps` (no warm-up when 0)."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def importance_weighted_bound(log_weights):
  """L_k = log (1/k) Σ_i w_i from log w_i = log p(x, z_i) − log q(z_i | x), sample axis first.

  Log-sum-exp keeps it finite when the weights span hundreds of nats. Differentiating this directly gives
  the IWAE gradient: the normalised weights appear through the log-sum-exp, nothing is detached.
  """
  num_samples = log_weights.shape[0]
  return jax.nn.logsumexp(log_weights, axis=0) - math.log(num_samples)
