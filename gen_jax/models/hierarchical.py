"""VAEs with two stochastic layers: Burda, Grosse & Salakhutdinov's (2016, Table 1's "2 layers", bottom-up
recognition) and the VampPrior paper's HVAE (top-down recognition, `HVAE` below).

Generative model p(h2) p(h1 | h2) p(x | h1) with p(h2) = N(0, I) and diagonal Gaussians for h1 | h2;
recognition model q(h1 | x) q(h2 | h1). In the paper: x-200-200-h1(100) in the recognition network's first
block, h1-100-100-h2(50) in its second, mirrored in the generative network (tanh throughout).

Everything a likelihood needs comes out of `log_weight_terms`: the three log-densities of each of k
samples, so the ELBO, the importance-weighted bound and the k = 5000 evaluation share one piece of code.
The first recognition block runs once per image (`encode_bottom`); everything after it depends on the
sample h1 and runs once per sample.
"""

import functools
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import objectives
from gen_jax.models import networks, vae as vae_lib


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


class JointMLP(nn.Module):
  """Two inputs, each through one hidden layer of `hidden_sizes[0]`, concatenated, then the layers of
  `hidden_sizes[1:]`: the shape of the VampPrior HVAE's q(z1 | x, z2) and p(x | z1, z2) trunks."""
  hidden_sizes: Sequence[int]
  hidden_layer: str = "gated"
  activation: str = "relu"
  weight_init: str = "he_normal"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, first, second):
    init = networks.kernel_init(None, self.weight_init)
    layer = functools.partial(networks.HIDDEN_LAYERS[self.hidden_layer], activation=self.activation, init=init,
                              dtype=self.dtype)
    first = layer(first.astype(self.dtype), self.hidden_sizes[0])
    second = layer(second.astype(self.dtype), self.hidden_sizes[0])
    first, second = jnp.broadcast_arrays(first, second)  # One image's features serve all its k samples.
    h = jnp.concatenate([first, second], axis=-1)
    for size in self.hidden_sizes[1:]:
      h = layer(h, size)
    return h


class HVAE(nn.Module):
  """The VampPrior paper's two-level VAE (Tomczak & Welling 2018, Sec. 3.2; Exemplar-VAE's `HVAE_2level`).

  Generative model p(z2) p(z1 | z2) p(x | z1, z2), recognition model q(z2 | x) q(z1 | x, z2): the top layer
  z2 carries the prior (N(0, I) or the VampPrior, on q(z2 | u_k)). With `hidden_sizes` (300, 300):
  q(z2|x) and p(z1|z2) are two hidden layers each; q(z1|x,z2) and p(x|z1,z2) take each input through one
  layer of 300, concatenate and add one more. Gaussian log-variances are clamped to `log_variance_range`.

  `encode_image` runs what depends on x alone once per image; `log_weight_terms` then handles k samples.
  """
  hidden_sizes: Sequence[int]
  latent_dim: int  # z1, the bottom layer.
  top_latent_dim: int  # z2, the top layer (the prior's).
  image_shape: Sequence[int]
  outputs_per_pixel: int = 1
  hidden_layer: str = "gated"
  activation: str = "relu"
  weight_init: str = "he_normal"
  log_variance_range: Tuple[float, ...] = (-6.0, 2.0)
  dtype: jnp.dtype = jnp.float32
  pseudo_inputs: Optional[nn.Module] = None

  def setup(self):
    mlp = functools.partial(networks.MLPEncoder, activation=self.activation, dtype=self.dtype,
                            hidden_layer=self.hidden_layer, weight_init=self.weight_init,
                            log_variance_range=self.log_variance_range)
    joint = functools.partial(JointMLP, self.hidden_sizes, self.hidden_layer, self.activation, self.weight_init,
                              self.dtype)
    init = networks.kernel_init(None, self.weight_init)
    self.top_encoder = mlp(self.hidden_sizes, self.top_latent_dim)  # q(z2 | x)
    self.bottom_encoder_trunk = joint()  # q(z1 | x, z2) up to its output layer
    self.bottom_encoder_head = nn.Dense(2 * self.latent_dim, dtype=self.dtype, kernel_init=init)
    self.bottom_prior = mlp(self.hidden_sizes, self.latent_dim)  # p(z1 | z2)
    self.decoder_trunk = joint()  # p(x | z1, z2) up to its output layer
    height, width, channels = self.image_shape
    self.decoder_head = nn.Dense(height * width * channels * self.outputs_per_pixel, dtype=self.dtype,
                                 kernel_init=init)

  def _stats(self, head, h):
    mean, log_variance = jnp.split(head(h).astype(jnp.float32), 2, axis=-1)
    return mean, networks.clamp_log_variance(log_variance, self.log_variance_range)

  def prior_components(self):
    """(means, log-variances) of q(z2 | u_k) for the VampPrior's pseudo-inputs; None for N(0, I)."""
    return None if self.pseudo_inputs is None else self.top_encoder(self.pseudo_inputs())

  def encode_image(self, x):
    """q(z2 | x) and the flattened image (what q(z1 | x, z2) reads)."""
    return self.top_encoder(x), x.reshape(x.shape[0], -1)

  def bottom_posterior(self, flat_x, z2):
    """(mean, log-variance) of q(z1 | x, z2) for z2 of shape (..., batch, d2)."""
    return self._stats(self.bottom_encoder_head, self.bottom_encoder_trunk(flat_x, z2))

  def bottom_prior_stats(self, z2):
    """(mean, log-variance) of p(z1 | z2) for z2 of shape (..., d2)."""
    flat_mean, flat_log_variance = self.bottom_prior(z2.reshape(-1, z2.shape[-1]))
    return flat_mean.reshape(*z2.shape[:-1], -1), flat_log_variance.reshape(*z2.shape[:-1], -1)

  def decode_both(self, z1, z2):
    """The decoder output of p(x | z1, z2), shape (..., H, W, C·outputs_per_pixel)."""
    height, width, channels = self.image_shape
    out = self.decoder_head(self.decoder_trunk(z1, z2)).astype(jnp.float32)
    return out.reshape(*z1.shape[:-1], height, width, channels * self.outputs_per_pixel)

  def log_weight_terms(self, encoded, key, num_samples):
    """For k = `num_samples` draws z2 ~ q(z2|x), z1 ~ q(z1|x,z2): the decoder output of p(x | z1, z2),
    log p(z1, z2) and log q(z1, z2 | x), each with leading axes (k, batch)."""
    (top_mean, top_log_variance), flat_x, components = encoded
    top_key, bottom_key = jax.random.split(key)
    z2 = objectives.reparameterize(top_key, top_mean, top_log_variance, num_samples=num_samples)
    bottom_mean, bottom_log_variance = self.bottom_posterior(flat_x, z2)
    z1 = objectives.reparameterize(bottom_key, bottom_mean, bottom_log_variance)
    prior_mean, prior_log_variance = self.bottom_prior_stats(z2)
    log_prior = (vae_lib.log_prior(z2, components)
                 + objectives.gaussian_log_density(z1, prior_mean, prior_log_variance))
    log_posterior = (objectives.gaussian_log_density(z2, top_mean, top_log_variance)
                     + objectives.gaussian_log_density(z1, bottom_mean, bottom_log_variance))
    return self.decode_both(z1, z2), log_prior, log_posterior

  def encode(self, x, labels=None):
    """(mean, log-variance) of q(z2 | x): the top code of an image, for reconstructions."""
    del labels
    return self.top_encoder(x)

  def decode(self, z2, labels=None):
    """Decoder output at z2 and z1 = the mean of p(z1 | z2), for sample and reconstruction grids."""
    del labels
    z1_mean, _ = self.bottom_prior_stats(z2)
    return self.decode_both(z1_mean, z2)

  def __call__(self, x, key, labels=None):
    """Touches every parameter (for `init`) with one sample; returns the decoder output."""
    del labels
    encoded = (*self.encode_image(x), self.prior_components())
    decoder_output, _, _ = self.log_weight_terms(encoded, key, 1)
    return decoder_output[0]
