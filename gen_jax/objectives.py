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


@jax.custom_jvp
def softplus(x):
  """log(1 + eˣ), computed as max(x, 0) + log1p(e^−|x|), with the derivative sigmoid(x) given directly.

  Same values as `jax.nn.softplus`, but its gradient is about 3.5× cheaper on CPU: JAX's version
  differentiates through logaddexp's guards, and the Bernoulli likelihood evaluates it on every pixel.
  """
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (x,), (x_dot,) = primals, tangents
  decay = jnp.exp(-jnp.abs(x))
  reciprocal = 1.0 / (1.0 + decay)
  sigmoid = jnp.where(x >= 0, reciprocal, decay * reciprocal)  # Reuses e^−|x|: no second exp.
  return jnp.maximum(x, 0.0) + jnp.log1p(decay), sigmoid * x_dot


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
    log_p = x * decoder_output - softplus(decoder_output)
  elif likelihood == "continuous_bernoulli":
    log_p = (x * decoder_output - softplus(decoder_output)
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


def iwae_terms(log_weights, recon, kl):
  """Loss −mean L_k and metrics from log weights (k, batch) and per-example recon and kl.

  The loss is the negative importance-weighted bound; the metrics still report the true per-sample ELBO
  (recon − kl, averaged over the k samples) next to the bound being trained, `iwae_bound`.
  """
  bound = importance_weighted_bound(log_weights)
  loss = -jnp.mean(bound)
  return loss, {"elbo": jnp.mean(recon - kl), "recon": jnp.mean(recon), "kl": jnp.mean(kl),
                "iwae_bound": jnp.mean(bound)}


# --- GAN losses ---------------------------------------------------------------------------------------
#
# Every GAN loss is written on the discriminator's raw outputs (logits for the probabilistic losses,
# unbounded scores for the others), per example until the final mean, and returns (loss, metrics):
# `discriminator_loss` gives d_loss, d_loss_real, d_loss_fake, d_real, d_fake; `generator_loss` gives
# g_loss. `d_real`/`d_fake` are the discriminator's mean outputs: the probability D(x) = sigmoid(logit)
# for minimax and non-saturating, the raw output for the others (for least squares that output is itself
# the estimate of p_data / (p_data + p_g), ½ at the optimum). The two functions are separate because the
# generator step needs only the fakes' outputs; computing the real ones there would waste a forward pass.

GAN_LOSSES = ("minimax", "non_saturating", "hinge", "least_squares", "wasserstein")


def discriminator_probability(loss, outputs):
  """D's estimate of P(real) from its raw outputs, where the loss defines one (else None)."""
  if loss in ("minimax", "non_saturating"):
    return jax.nn.sigmoid(outputs)
  if loss == "least_squares":  # With targets real=1, fake=0 the optimal output is p_data / (p_data + p_g).
    return outputs
  return None


def _discriminator_means(loss, real_outputs, fake_outputs):
  real = discriminator_probability(loss, real_outputs)
  fake = discriminator_probability(loss, fake_outputs)
  real = real_outputs if real is None else real
  fake = fake_outputs if fake is None else fake
  return jnp.mean(real), jnp.mean(fake)


def discriminator_loss(loss, real_outputs, fake_outputs):
  """The discriminator's loss on one batch of real and one of generated examples.

  - minimax, non_saturating (Goodfellow et al. 2014; the same D loss): −log D(x) − log(1 − D(G(z))),
    with log D = −softplus(−logit) and log(1 − D) = −softplus(logit), stable for any logit;
  - hinge (Lim & Ye 2017; Miyato et al. 2018): max(0, 1 − D(x)) + max(0, 1 + D(G(z)));
  - least_squares (Mao et al. 2017, targets a=0, b=1): ½(D(x) − 1)² + ½D(G(z))²;
  - wasserstein (Arjovsky et al. 2017): −D(x) + D(G(z)); the Lipschitz constraint comes from the gradient
    penalty (`gradient_penalty`, Gulrajani et al. 2017) or spectral normalisation, added by the caller.
  """
  real_outputs = real_outputs.astype(jnp.float32)
  fake_outputs = fake_outputs.astype(jnp.float32)
  if loss in ("minimax", "non_saturating"):
    per_real, per_fake = jax.nn.softplus(-real_outputs), jax.nn.softplus(fake_outputs)
  elif loss == "hinge":
    per_real, per_fake = jax.nn.relu(1.0 - real_outputs), jax.nn.relu(1.0 + fake_outputs)
  elif loss == "least_squares":
    per_real, per_fake = 0.5 * (real_outputs - 1.0)**2, 0.5 * fake_outputs**2
  elif loss == "wasserstein":
    per_real, per_fake = -real_outputs, fake_outputs
  else:
    raise ValueError(f"unknown GAN loss {loss!r}; allowed: {', '.join(GAN_LOSSES)}")
  d_loss_real, d_loss_fake = jnp.mean(per_real), jnp.mean(per_fake)
  d_loss = d_loss_real + d_loss_fake
  d_real, d_fake = _discriminator_means(loss, real_outputs, fake_outputs)
  return d_loss, {"d_loss": d_loss, "d_loss_real": d_loss_real, "d_loss_fake": d_loss_fake,
                  "d_real": d_real, "d_fake": d_fake}


def generator_loss(loss, fake_outputs):
  """The generator's loss on the discriminator's outputs for generated examples.

  - minimax: log(1 − D(G(z))) = −softplus(logit), the original paper's saturating objective. Its gradient
    with respect to the logit is −sigmoid(logit), which vanishes exactly when D confidently rejects the
    fakes (logit → −∞): early in training the generator barely moves;
  - non_saturating: −log D(G(z)) = softplus(−logit), gradient −(1 − sigmoid(logit)) → −1 there;
  - hinge and wasserstein: −D(G(z));
  - least_squares: ½(D(G(z)) − 1)².
  """
  fake_outputs = fake_outputs.astype(jnp.float32)
  if loss == "minimax":
    per_fake = -jax.nn.softplus(fake_outputs)
  elif loss == "non_saturating":
    per_fake = jax.nn.softplus(-fake_outputs)
  elif loss in ("hinge", "wasserstein"):
    per_fake = -fake_outputs
  elif loss == "least_squares":
    per_fake = 0.5 * (fake_outputs - 1.0)**2
  else:
    raise ValueError(f"unknown GAN loss {loss!r}; allowed: {', '.join(GAN_LOSSES)}")
  g_loss = jnp.mean(per_fake)
  return g_loss, {"g_loss": g_loss}


def _input_gradient_norms(critic, x):
  """‖∇_x D(x)‖₂ per example; `critic` maps a batch to one output per example, examples independent."""
  gradients = jax.grad(lambda inputs: jnp.sum(critic(inputs)))(x)
  return jnp.sqrt(jnp.sum(gradients.reshape(gradients.shape[0], -1)**2, axis=-1) + 1e-12)


def gradient_penalty(critic, real, fake, key):
  """WGAN-GP's penalty per example, (‖∇D(x̂)‖₂ − 1)², at x̂ = εx + (1 − ε)x̃ with ε ~ U[0, 1] per example.

  Summing the outputs before differentiating gives every example its own input gradient only because the
  examples do not interact, so the critic must not use batch normalisation (the trainer refuses that).
  The 1e-12 inside the square root keeps the penalty's own gradient finite at a zero input gradient.
  """
  epsilon = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  interpolates = epsilon * real + (1.0 - epsilon) * fake
  return (_input_gradient_norms(critic, interpolates) - 1.0)**2


def r1_penalty(critic, real):
  """Mescheder et al. 2018's R1 per example, ‖∇_x D(x)‖₂² on real data (the caller weights it by γ/2)."""
  gradients = jax.grad(lambda inputs: jnp.sum(critic(inputs)))(real)
  return jnp.sum(gradients.reshape(gradients.shape[0], -1)**2, axis=-1)
