"""The variational autoencoder (and, with `num_classes`, the conditional VAE) as one Linen module.

q(z | x[, y]) is a diagonal Gaussian from the encoder; p(z) = N(0, I) or the VampPrior (a mixture of the
encoder's own posteriors at K learned pseudo-inputs); p(x | z[, y]) is the decoder's likelihood. The
sampling key is an explicit argument, never hidden module state.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import objectives


class PseudoInputs(nn.Module):
  """The VampPrior's K learned pseudo-inputs u_k in [0, 1] (Tomczak & Welling 2018).

  The reference code makes them hardtanh(0, 1) of a bias-free linear map of the K one-hot vectors, which is
  its (K, D) weight matrix clipped to [0, 1]; this is that matrix. Entries outside [0, 1] get no gradient
  (as there), so an initial mean below 0 with a small spread would leave every pseudo-input black for good.
  """
  count: int
  image_shape: Tuple[int, ...]
  init_mean: float = 0.05
  init_std: float = 0.01

  @nn.compact
  def __call__(self):
    init = lambda key, shape: self.init_mean + self.init_std * jax.random.normal(key, shape)
    return jnp.clip(self.param("pseudo_inputs", init, (self.count, *self.image_shape)), 0.0, 1.0)


def log_prior(z, components):
  """log p(z): N(0, I) when `components` is None, else the VampPrior mixture of the K posteriors q(z | u_k)."""
  if components is None:
    return objectives.standard_normal_log_density(z)
  return objectives.mixture_log_density(z, *components)


def sample_prior(key, count, dim, components):
  """`count` draws of p(z) (see `log_prior`)."""
  if components is None:
    return jax.random.normal(key, (count, dim))
  return objectives.sample_mixture(key, *components, count)


class VAE(nn.Module):
  encoder: nn.Module
  decoder: nn.Module
  num_classes: Optional[int] = None  # Set for the conditional VAE: q(z|x,y), p(x|z,y).
  pseudo_inputs: Optional[nn.Module] = None  # Set for the VampPrior; None: p(z) = N(0, I).

  def prior_components(self):
    """(means, log-variances) of q(z | u_k) for the K pseudo-inputs; None for the standard normal prior."""
    if self.pseudo_inputs is None:
      return None
    return self.encoder(self.pseudo_inputs(), None)

  def _label(self, labels):
    if self.num_classes is None:
      return None
    return jax.nn.one_hot(labels, self.num_classes)

  def encode(self, x, labels=None):
    return self.encoder(x, self._label(labels))

  def decode(self, z, labels=None):
    return self.decoder(z, self._label(labels))

  def __call__(self, x, key, labels=None):
    """Returns (decoder output, mean, log-variance) for one reparameterised sample per example."""
    mean, log_variance = self.encode(x, labels)
    z = objectives.reparameterize(key, mean, log_variance)
    self.prior_components()  # Creates the pseudo-inputs at `init`.
    return self.decode(z, labels), mean, log_variance
