"""The variational autoencoder (and, with `num_classes`, the conditional VAE) as one Linen module.

q(z | x[, y]) is a diagonal Gaussian from the encoder; p(z) = N(0, I); p(x | z[, y]) is the decoder's
likelihood. The sampling key is an explicit argument, never hidden module state.
"""

from typing import Optional

import flax.linen as nn
import jax

from gen_jax import objectives


class VAE(nn.Module):
  encoder: nn.Module
  decoder: nn.Module
  num_classes: Optional[int] = None  # Set for the conditional VAE: q(z|x,y), p(x|z,y).

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
    return self.decode(z, labels), mean, log_variance
