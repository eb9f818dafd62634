"""The priors p(z) of the latent-code models, as Linen modules with one interface.

A prior has three methods:

  statistics(posterior_of) -> what its density and sampler need, computed once per training step (or per
      evaluation) from the parameters alone: None for N(0, I); the VampPrior's (means, log-variances) of the
      K posteriors q(z | u_k). `posterior_of(images)` is the model's own q(z | x) on the prior's latent, as
      (mean, log-variance); a prior that is not built from the encoder ignores it.
  log_density(z, statistics) -> log p(z), summed over the last axis of z (..., d).
  sample(key, count, dim, statistics) -> `count` draws, (count, dim).

A model holds its prior as the field `prior` and inherits `ModelWithPrior`, which gives the training code,
the evaluation and the samplers one way in (`prior_statistics`, `log_prior`, `sample_prior`), whatever the prior.
A new prior is a module with those three methods, plus its entry in the VAE family's `PRIORS` table (which
says what builds it, its KL estimate, the settings it reads and the architectures it can sit on).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import objectives


class StandardNormal(nn.Module):
  """p(z) = N(0, I): nothing learned."""

  def statistics(self, posterior_of):
    del posterior_of
    return None

  def log_density(self, z, statistics):
    del statistics
    return objectives.standard_normal_log_density(z)

  def sample(self, key, count, dim, statistics):
    del statistics
    return jax.random.normal(key, (count, dim))


class PseudoInputs(nn.Module):
  """The VampPrior's K learned pseudo-inputs u_k in [0, 1] (Tomczak & Welling 2018).

  The reference code makes them hardtanh(0, 1) of a bias-free linear map of the K one-hot vectors, which is
  its (K, D) weight matrix clipped to [0, 1]; this is that matrix. Entries outside [0, 1] get no gradient
  (as there), so an initial mean below 0 with a small spread would leave every pseudo-input black for good.
  """
  count: int
  image_shape: tuple
  init_mean: float = 0.05
  init_std: float = 0.01

  @nn.compact
  def __call__(self):
    init = lambda key, shape: self.init_mean + self.init_std * jax.random.normal(key, shape)
    return jnp.clip(self.param("pseudo_inputs", init, (self.count, *self.image_shape)), 0.0, 1.0)


class VampPrior(nn.Module):
  """p(z) = (1/K) Σ_k q(z | u_k): the model's own posteriors at K learned pseudo-inputs (Tomczak & Welling
  2018). Its statistics are those posteriors, one encoder pass over the K pseudo-inputs."""
  pseudo_inputs: PseudoInputs

  def statistics(self, posterior_of):
    return posterior_of(self.pseudo_inputs())

  def log_density(self, z, statistics):
    return objectives.mixture_log_density(z, *statistics)

  def sample(self, key, count, dim, statistics):
    del dim  # The components' own.
    return objectives.sample_mixture(key, *statistics, count)


def vampprior(count, image_shape, init_mean, init_std):
  return VampPrior(PseudoInputs(count, tuple(image_shape), init_mean, init_std))


class ModelWithPrior(nn.Module):
  """The prior-facing methods of a latent-code model with a field `prior` (a module of this file).

  A model whose prior is built from its encoder (the VampPrior) defines `prior_posterior(images)`: q(z | x) on
  the prior's latent. The prior's parameters sit at the model's top level (`nn.share_scope`): the VampPrior's
  pseudo-inputs keep the path params/pseudo_inputs/pseudo_inputs they had before priors were modules, so runs
  saved then still restore (a prior's parts must therefore not be named like the model's own).
  """

  def setup(self):
    nn.share_scope(self, self.prior)

  def prior_posterior(self, images):
    raise NotImplementedError(f"{type(self).__name__} has no q(z | x) on its prior's latent for the prior "
                              f"{type(self.prior).__name__} to be built from")

  def prior_statistics(self):
    """The prior's statistics (see the module docstring); at `init` this creates its parameters."""
    return self.prior.statistics(lambda images: self.prior_posterior(images))

  def log_prior(self, z, statistics):
    return self.prior.log_density(z, statistics)

  def sample_prior(self, key, count, dim):
    return self.prior.sample(key, count, dim, self.prior_statistics())


def default_prior():
  """N(0, I), the models' prior unless one is given (a dataclass default must be made anew per model)."""
  return dataclasses.field(default_factory=StandardNormal)
