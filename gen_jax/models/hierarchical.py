"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov 2016, Table 1's "2 layers").

Generative model p(h2) p(h1 | h2) p(x | h1) with p(h2) = N(0, I) and diagonal Gaussians for h1 | h2;
recognition model q(h1 | x) q(h2 | h1). In the paper: x-200-200-h1(100) in the recognition network's first
block, h1-100-100-h2(50) in its second, mirrored in the generative network (tanh throughout).

Everything a likelihood needs comes out of `log_weight_terms`: the three log-densities of each of k
samples, so the ELBO, the importance-weighted bound and the k = 5000 evaluation share one piece of code.
The first recognition block runs once per image (`encode_bottom`); everything after it depends on the
sample h1 and runs once per sample.
"""

import flax.linen as nn
import jax

from gen_jax import objectives
from gen_jax.models import networks


def _over_leading_axes(module, values):
  """Applies an MLPEncoder (which flattens all but the first axis) to the last axis of (..., d) values."""
  mean, log_variance = module(values.reshape(-1, values.shape[-1]))
  return mean.reshape(*values.shape[:-1], -1), log_variance.reshape(*values.shape[:-1], -1)


class TwoLayerVAE(nn.Module):
  """q(h1|x) = `bottom_encoder`, q(h2|h1) = `top_encoder`, p(h1|h2) = `top_decoder`, p(x|h1) = `bottom_decoder`.

  `top_decoder` is an MLPEncoder as well: it maps h2 to the mean and log-variance of h1.
  """
  bottom_encoder: nn.Module
  top_encoder: nn.Module
  top_decoder: nn.Module
  bottom_decoder: nn.Module

  def encode_bottom(self, x):
    """(mean, log-variance) of q(h1 | x): the part of the recognition model that sees the image."""
    return self.bottom_encoder(x)

  def encode_top(self, h1):
    """(mean, log-variance) of q(h2 | h1) for samples h1 of shape (..., d1)."""
    return _over_leading_axes(self.top_encoder, h1)

  def log_weight_terms(self, bottom_stats, h1, key):
    """For samples h1 of q(h1 | x), shape (k, batch, d1), with `bottom_stats` = q(h1 | x)'s (mean, log-var):

    returns the decoder output of p(x | h1), log p(h1, h2) and log q(h1, h2 | x) (each (k, batch)). h2 is
    drawn from q(h2 | h1) with `key`, one draw per h1.
    """
    top_mean, top_log_variance = self.encode_top(h1)
    h2 = objectives.reparameterize(key, top_mean, top_log_variance)
    prior_mean, prior_log_variance = _over_leading_axes(self.top_decoder, h2)
    decoder_output = self.bottom_decoder(h1)
    log_prior = (objectives.standard_normal_log_density(h2)
                 + objectives.gaussian_log_density(h1, prior_mean, prior_log_variance))
    log_posterior = (objectives.gaussian_log_density(h1, *bottom_stats)
                     + objectives.gaussian_log_density(h2, top_mean, top_log_variance))
    return decoder_output, log_prior, log_posterior

  def encode(self, x, labels=None):
    """(mean, log-variance) of q(h2 | h1 = E[h1 | x]): the top code of an image, for reconstructions."""
    del labels
    bottom_mean, _ = self.encode_bottom(x)
    return self.top_encoder(bottom_mean)

  def decode(self, h2, labels=None):
    """Decoder output for top codes h2 through the mean of p(h1 | h2), for sample and reconstruction grids."""
    del labels
    h1_mean, _ = _over_leading_axes(self.top_decoder, h2)
    return self.bottom_decoder(h1_mean)

  def __call__(self, x, key, labels=None):
    """Touches every parameter (for `init`) with one sample; returns the decoder output."""
    del labels
    bottom_stats = self.encode_bottom(x)
    bottom_key, top_key = jax.random.split(key)
    h1 = objectives.reparameterize(bottom_key, *bottom_stats, num_samples=1)
    decoder_output, _, _ = self.log_weight_terms(bottom_stats, h1, top_key)
    return decoder_output[0]


def build_two_layer_vae(hidden_sizes, latent_dim, top_hidden_sizes, top_latent_dim, image_shape,
                        outputs_per_pixel, activation, init_std, dtype):
  """The Table 1 architecture from its sizes: x-hidden-h1(latent_dim)-top_hidden-h2(top_latent_dim)."""
  return TwoLayerVAE(
      bottom_encoder=networks.MLPEncoder(hidden_sizes, latent_dim, activation, init_std, dtype),
      top_encoder=networks.MLPEncoder(top_hidden_sizes, top_latent_dim, activation, init_std, dtype),
      top_decoder=networks.MLPEncoder(tuple(reversed(top_hidden_sizes)), latent_dim, activation, init_std,
                                      dtype),
      bottom_decoder=networks.MLPDecoder(tuple(reversed(hidden_sizes)), image_shape, outputs_per_pixel,
                                         activation, init_std, dtype))
