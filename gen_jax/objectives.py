"""Training objectives as pure functions, in nats per example.

Every objective returns `(loss, metrics)`: a scalar to minimise and a dict of per-batch means of every term,
so that what is optimised and what is reported can never drift apart. Per-example values are kept until the
final mean.

Conventions: `x` is data in [0, 1] with shape (batch, *event_shape); decoder outputs carry the same leading
shape. Log-densities are summed over the event dimensions.
"""

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

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


def full_precision_matmul(a, b):
  """a @ b with float32 inputs kept to float32 on every backend.

  An accelerator's default float32 matmul rounds its inputs (to TF32's 10 mantissa bits on NVIDIA GPUs since
  Ampere, to bfloat16 passes on TPUs). Inside a network that only perturbs the function the model computes, and
  every density stays normalised; in a density written as matmuls of expanded squares (Σ (z − μ)²/σ² =
  z²·(1/σ²) − 2z·(μ/σ²) + μ²/σ²), large terms cancel and the rounding moves log p by nats (simulated in numpy
  by rounding this module's VampPrior matmul inputs, K = 500, d = 40, μ ~ N(0, 1.5²), log σ² ~ U(−6, 0), z drawn
  from the mixture: off by 0.72 nats on average and 7.9 at most with TF32, 5.6 and 45 with bfloat16, against
  0.0002 in float32), so the density is no longer normalised and the importance-weighted bound no longer a bound.
  Those matmuls are small (K × d), so the exact ones cost little. The CPU ignores the setting (always float32).
  """
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def pairwise_gaussian_log_densities(x, means, log_variances, centre):
  """log N(x; μ_k, diag σ_k²) for every x (..., d) and each of K components (K, d): shape (..., K).

  The squared distances Σ_d (x_d − μ_kd)² / σ_kd² of every pair come from two matmuls, x² · (1/σ²)ᵀ −
  2 x · (μ/σ²)ᵀ + Σ μ²/σ², rather than from broadcasting (…, K, d) differences: on the CPU the broadcast form
  made the VampPrior's training step 16 times slower than the plain VAE's (the matmul form, about 30 times
  faster here, brings it to its FLOP count). The expansion cancels large terms, so x and the means are first
  expanded around `centre` (d,), near both (any shift leaves every difference unchanged), which keeps the
  terms small; both matmuls stay in float32 on accelerators too (`full_precision_matmul`).
  """
  precisions = jnp.exp(-log_variances)
  x, means = x - centre, means - centre
  squared_distances = (full_precision_matmul(x**2, precisions.T)
                       - 2.0 * full_precision_matmul(x, (means * precisions).T)
                       + jnp.sum(means**2 * precisions, axis=-1))
  return -0.5 * (squared_distances + jnp.sum(log_variances, axis=-1) + x.shape[-1] * _LOG_2PI)


def mixture_log_density(z, means, log_variances):
  """log (1/K) Σ_k N(z; μ_k, diag σ_k²) for z (..., d) and K components (K, d): the VampPrior's log p(z).

  The pairs' densities are expanded around the means' average (`pairwise_gaussian_log_densities`); the test
  against a float64 brute force holds the result to a relative 1e-5, far from the origin too.
  """
  centre = jax.lax.stop_gradient(jnp.mean(means, axis=0))  # Any shift works; the gradient needs none.
  pair_log_densities = pairwise_gaussian_log_densities(z, means, log_variances, centre)
  return jax.nn.logsumexp(pair_log_densities, axis=-1) - math.log(means.shape[0])


def sample_mixture(key, means, log_variances, count):
  """`count` draws of the equal-weight mixture of N(μ_k, diag σ_k²): a component uniformly, then a draw."""
  component_key, noise_key = jax.random.split(key)
  components = jax.random.randint(component_key, (count,), 0, means.shape[0])
  return reparameterize(noise_key, means[components], log_variances[components])


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


def _bernoulli(decoder_output, x, gaussian_std):
  del gaussian_std
  return x * decoder_output - softplus(decoder_output)


def _continuous_bernoulli(decoder_output, x, gaussian_std):
  return _bernoulli(decoder_output, x, gaussian_std) + _log_normalizer_continuous_bernoulli(decoder_output)


def _gaussian_mean_and_log_variance(decoder_output, gaussian_std):
  if gaussian_std is None:
    return jnp.split(decoder_output, 2, axis=-1)
  return decoder_output, jnp.full_like(decoder_output, 2.0 * math.log(gaussian_std))


def _gaussian(decoder_output, x, gaussian_std):
  mean, log_variance = _gaussian_mean_and_log_variance(decoder_output, gaussian_std)
  return -0.5 * (_LOG_2PI + log_variance + (x - mean)**2 * jnp.exp(-log_variance))


def _continuous_bernoulli_mean(decoder_output, gaussian_std):
  """λ/(2λ−1) + 1/(2·atanh(1−2λ)) = sigmoid(η)/tanh(η/2) − 1/η; 0/0 at η = 0, where it is ½ + η/12."""
  del gaussian_std
  small = jnp.abs(decoder_output) < 1e-2
  safe = jnp.where(small, 1.0, decoder_output)
  exact = jax.nn.sigmoid(safe) / jnp.tanh(0.5 * safe) - 1.0 / safe
  return jnp.where(small, 0.5 + decoder_output / 12.0, exact)


@dataclasses.dataclass(frozen=True)
class Likelihood:
  """A decoder likelihood p(x | z): per-element log p(decoder_output, x, gaussian_std) and the mean E[x | z]."""
  log_prob: Callable[..., jax.Array]
  mean: Callable[..., jax.Array]


# - bernoulli: the outputs are logits; log p = x·η − softplus(η). Also valid for x in [0, 1], where it is the
#   negative binary cross-entropy (the pytorch/examples VAE objective).
# - continuous_bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1], the Bernoulli term
#   plus log C(λ).
# - gaussian: with `gaussian_std` set the outputs are the mean and the standard deviation is fixed;
#   otherwise they stack (mean, log-variance) on their last axis (learned per-pixel variance).
LIKELIHOODS = {
    "bernoulli": Likelihood(_bernoulli, lambda output, gaussian_std: jax.nn.sigmoid(output)),
    "gaussian": Likelihood(_gaussian, lambda output, gaussian_std: jnp.clip(
        _gaussian_mean_and_log_variance(output, gaussian_std)[0], 0.0, 1.0)),
    "continuous_bernoulli": Likelihood(_continuous_bernoulli, _continuous_bernoulli_mean),
}


def _likelihood(name):
  if name not in LIKELIHOODS:
    raise ValueError(f"unknown likelihood {name!r}; allowed: {', '.join(LIKELIHOODS)}")
  return LIKELIHOODS[name]


def log_likelihood(likelihood, decoder_output, x, batch_ndim=1, gaussian_std=None):
  """log p(x | z) for each example under the decoder likelihood `likelihood`, summed over the event axes."""
  log_p = _likelihood(likelihood).log_prob(decoder_output.astype(jnp.float32), x.astype(jnp.float32),
                                           gaussian_std)
  return _sum_event(log_p, batch_ndim)


def decoder_mean(likelihood, decoder_output, gaussian_std=None):
  """E[x | z] in data space, for pictures of reconstructions and samples."""
  return _likelihood(likelihood).mean(decoder_output.astype(jnp.float32), gaussian_std)


def elbo_terms(recon, kl, kl_weight=1.0):
  """Loss and metrics from per-example recon = E_q[log p(x|z)] and kl = KL(q(z|x) || p(z)).

  The loss weights the KL by `kl_weight` (β, times a warm-up factor), but the reported `elbo` is always the
  true bound recon − kl, so curves stay comparable across β.
  """
  elbo = recon - kl
  loss = -jnp.mean(recon - kl_weight * kl)
  return loss, {"elbo": jnp.mean(elbo), "recon": jnp.mean(recon), "kl": jnp.mean(kl)}


def kl_weight_schedule(step, beta=1.0, warmup_steps=0, warmup_epochs=0, steps_per_epoch=1):
  """β times a linear warm-up from 0 to 1: over `warmup_steps` steps, or over `warmup_epochs` epochs (no
  warm-up when both are 0).

  In epochs the weight is constant within an epoch and epoch e (counted from 1) has weight e/warmup_epochs,
  as in the VampPrior authors' training loop (`beta = epoch / warmup`), so the first epoch already trains
  with 1/warmup_epochs of the KL and epoch `warmup_epochs` with all of it.
  """
  if warmup_epochs > 0:
    epoch = step.astype(jnp.int32) // steps_per_epoch + 1
    return beta * jnp.minimum(1.0, epoch.astype(jnp.float32) / warmup_epochs)
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


# name -> (log_weights (k, batch), recon, kl, kl_weight) -> (loss, metrics): what `--objective` trains.
# elbo: the k-sample average of log w (k = 1: the VAE), the KL weighted by β and warm-up;
# iwae: the importance-weighted bound L_k (β does not apply: the trainer refuses it).
TRAINING_OBJECTIVES = {
    "elbo": lambda log_weights, recon, kl, kl_weight: elbo_terms(recon, kl, kl_weight),
    "iwae": lambda log_weights, recon, kl, kl_weight: iwae_terms(log_weights, recon, kl),
}


# --- GAN losses ---------------------------------------------------------------------------------------
#
# Every GAN loss is written on the discriminator's raw outputs (logits for the probabilistic losses,
# unbounded scores for the others), per example until the final mean, and returns (loss, metrics):
# `discriminator_loss` gives d_loss, d_loss_real, d_loss_fake, d_real, d_fake; `generator_loss` gives
# g_loss. `d_real`/`d_fake` are the discriminator's mean outputs: the probability D(x) = sigmoid(logit)
# for minimax and non-saturating, the raw output for the others (for least squares that output is itself
# the estimate of p_data / (p_data + p_g), ½ at the optimum). The two functions are separate because the
# generator step needs only the fakes' outputs; computing the real ones there would waste a forward pass.

@dataclasses.dataclass(frozen=True)
class GANLoss:
  """One GAN loss on raw outputs, per example: D's terms on real and on generated examples, G's term, and
  D's estimate of P(real) where the loss defines one (None otherwise)."""
  discriminator_real: Callable[[jax.Array], jax.Array]
  discriminator_fake: Callable[[jax.Array], jax.Array]
  generator: Callable[[jax.Array], jax.Array]
  probability: Optional[Callable[[jax.Array], jax.Array]]


# - minimax, non_saturating (Goodfellow et al. 2014; the same D loss): −log D(x) − log(1 − D(G(z))), with
#   log D = −softplus(−logit) and log(1 − D) = −softplus(logit), stable for any logit. G: minimax minimises
#   log(1 − D(G(z))) = −softplus(logit), the original saturating objective, whose gradient −sigmoid(logit)
#   vanishes exactly when D confidently rejects the fakes (logit → −∞); non_saturating minimises
#   −log D(G(z)) = softplus(−logit), gradient −(1 − sigmoid(logit)) → −1 there;
# - hinge (Lim & Ye 2017; Miyato et al. 2018): max(0, 1 − D(x)) + max(0, 1 + D(G(z))); G: −D(G(z));
# - least_squares (Mao et al. 2017, targets a=0, b=1): ½(D(x) − 1)² + ½D(G(z))²; G: ½(D(G(z)) − 1)². With
#   these targets the optimal output is itself p_data / (p_data + p_g), ½ at the optimum;
# - wasserstein (Arjovsky et al. 2017): −D(x) + D(G(z)); G: −D(G(z)). The Lipschitz constraint comes from
#   the gradient penalty (`gradient_penalty`, Gulrajani et al. 2017) or spectral normalisation.
GAN_LOSSES = {
    "minimax": GANLoss(lambda real: jax.nn.softplus(-real), jax.nn.softplus,
                       lambda fake: -jax.nn.softplus(fake), jax.nn.sigmoid),
    "non_saturating": GANLoss(lambda real: jax.nn.softplus(-real), jax.nn.softplus,
                              lambda fake: jax.nn.softplus(-fake), jax.nn.sigmoid),
    "hinge": GANLoss(lambda real: jax.nn.relu(1.0 - real), lambda fake: jax.nn.relu(1.0 + fake),
                     lambda fake: -fake, None),
    "least_squares": GANLoss(lambda real: 0.5 * (real - 1.0)**2, lambda fake: 0.5 * fake**2,
                             lambda fake: 0.5 * (fake - 1.0)**2, lambda outputs: outputs),
    "wasserstein": GANLoss(lambda real: -real, lambda fake: fake, lambda fake: -fake, None),
}


def _gan_loss(loss):
  if loss not in GAN_LOSSES:
    raise ValueError(f"unknown GAN loss {loss!r}; allowed: {', '.join(GAN_LOSSES)}")
  return GAN_LOSSES[loss]


def discriminator_probability(loss, outputs):
  """D's estimate of P(real) from its raw outputs, where the loss defines one (else None)."""
  probability = _gan_loss(loss).probability
  return None if probability is None else probability(outputs)


def discriminator_loss(loss, real_outputs, fake_outputs):
  """The discriminator's loss on one batch of real and one of generated examples (see GAN_LOSSES)."""
  terms = _gan_loss(loss)
  real_outputs = real_outputs.astype(jnp.float32)
  fake_outputs = fake_outputs.astype(jnp.float32)
  d_loss_real = jnp.mean(terms.discriminator_real(real_outputs))
  d_loss_fake = jnp.mean(terms.discriminator_fake(fake_outputs))
  d_loss = d_loss_real + d_loss_fake
  probability = terms.probability or (lambda outputs: outputs)
  return d_loss, {"d_loss": d_loss, "d_loss_real": d_loss_real, "d_loss_fake": d_loss_fake,
                  "d_real": jnp.mean(probability(real_outputs)), "d_fake": jnp.mean(probability(fake_outputs))}


def generator_loss(loss, fake_outputs):
  """The generator's loss on the discriminator's outputs for generated examples (see GAN_LOSSES)."""
  g_loss = jnp.mean(_gan_loss(loss).generator(fake_outputs.astype(jnp.float32)))
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
