"""The variational autoencoder (and, with `num_classes`, the conditional VAE) as one Linen module.

q(z | x[, y]) is a diagonal Gaussian from the encoder; p(z) is a module of `models.priors` (N(0, I), or the
VampPrior: a mixture of the encoder's own posteriors at K learned pseudo-inputs); p(x | z[, y]) is the
decoder's likelihood. The sampling key is an explicit argument, never hidden module state.
"""

from typing import Optional

import flax.linen as nn
import jax

from gen_jax import objectives
from gen_jax.models import priors


class VAE(priors.ModelWithPrior):
  encoder: nn.Module
  decoder: nn.Module
  num_classes: Optional[int] = None  # Set for the conditional VAE: q(z|x,y), p(x|z,y).
  prior: nn.Module = priors.default_prior()  # p(z), a module of `models.priors`.

  def prior_posterior(self, images):
    return self.encoder(images, None)  # Only an unconditional VAE's prior may be built from its encoder.

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
    self.prior_statistics()  # Creates the prior's parameters (the VampPrior's pseudo-inputs) at `init`.
    return self.decode(z, labels), mean, log_variance
