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
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import objectives
from gen_jax.models import networks, priors


def _over_leading_axes(module, values):
  """Applies an MLPEncoder (which flattens all but the first axis) to the last axis of (..., d) values."""
  mean, log_variance = module(values.reshape(-1, values.shape[-1]))
  return mean.reshape(*values.shape[:-1], -1), log_variance.reshape(*values.shape[:-1], -1)


class TwoLayerVAE(priors.ModelWithPrior):
  """q(h1|x) = `bottom_encoder`, q(h2|h1) = `top_encoder`, p(h1|h2) = `top_decoder`, p(x|h1) = `bottom_decoder`.

  `top_decoder` is an MLPEncoder as well: it maps h2 to the mean and log-variance of h1. The prior p(h2) can
  not be built from an encoder (q(h2 | x) is itself a mixture over h1), so it has no `prior_posterior`.
  """
  bottom_encoder: nn.Module
  top_encoder: nn.Module
  top_decoder: nn.Module
  bottom_decoder: nn.Module
  prior: nn.Module = priors.default_prior()  # p(h2)

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
    log_prior = (self.log_prior(h2, self.prior_statistics())
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
                        outputs_per_pixel, activation, init_std, dtype, prior):
  """The Table 1 architecture from its sizes: x-hidden-h1(latent_dim)-top_hidden-h2(top_latent_dim)."""
  return TwoLayerVAE(
      bottom_encoder=networks.MLPEncoder(hidden_sizes, latent_dim, activation, init_std, dtype),
      top_encoder=networks.MLPEncoder(top_hidden_sizes, top_latent_dim, activation, init_std, dtype),
      top_decoder=networks.MLPEncoder(tuple(reversed(top_hidden_sizes)), latent_dim, activation, init_std,
                                      dtype),
      bottom_decoder=networks.MLPDecoder(tuple(reversed(hidden_sizes)), image_shape, outputs_per_pixel,
                                         activation, init_std, dtype),
      prior=prior)


def _layer_fn(hidden_layer, activation, weight_init, dtype):
  """h, size -> the hidden layer `hidden_layer` names (see networks.HIDDEN_LAYERS), for use in compact modules."""
  return functools.partial(networks.HIDDEN_LAYERS[hidden_layer], activation=activation,
                           init=networks.kernel_init(None, weight_init), dtype=dtype)


class DenseFeatures(nn.Module):
  """The image flattened and through hidden layers of `sizes`: the MLP HVAE's x-branch of q(z1 | x, z2)."""
  sizes: Sequence[int]
  hidden_layer: str = "gated"
  activation: str = "relu"
  weight_init: str = "he_normal"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    layer = _layer_fn(self.hidden_layer, self.activation, self.weight_init, self.dtype)
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    for size in self.sizes:
      h = layer(h, size)
    return h


# The ConvHVAE's gated convolution stacks (Tomczak & Welling's convHVAE_2level): (features, kernel, stride) per
# layer, padding (kernel - 1) / 2, so 28 x 28 images end as 6 maps of 7 x 7 (294 features).
TOP_ENCODER_CONVS = ((32, 7, 1), (32, 3, 2), (64, 5, 1), (64, 3, 2), (6, 3, 1))  # q(z2 | x)
BOTTOM_ENCODER_CONVS = ((32, 3, 1), (32, 3, 2), (64, 3, 1), (64, 3, 2), (6, 3, 1))  # q(z1 | x, z2)'s x-branch
DECODER_CONVS = ((64, 3, 1), (64, 3, 1), (64, 3, 1), (64, 3, 1))  # p(x | z1, z2) after its image-sized layer
# PyTorch's default convolution init (kaiming_uniform with a = sqrt(5): U(±1/sqrt(fan_in))), which the reference
# keeps for its convolutions (its He-normal re-initialisation touches linear layers only).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class GatedConvStack(nn.Module):
  """Gated convolutions h ⊙ σ(g) (h, g two convolutions of the same input), flattened at the end."""
  layers: Sequence[Tuple[int, int, int]]
  flatten: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = x.astype(self.dtype)
    for features, kernel, stride in self.layers:
      # XLA's own convolutions (nn.Conv), not gen_jax.models.convolution's CPU patches: for these mostly
      # stride-1 7×7/5×5/3×3 layers the patches are 9-49× the input, and the ConvHVAE step measured 61
      # examples/s with XLA's kernels against 56 with the patches (scripts/benchmark.py).
      conv = functools.partial(nn.Conv, features, (kernel, kernel), strides=(stride, stride),
                               padding=[((kernel - 1) // 2,) * 2] * 2, kernel_init=TORCH_CONV_INIT, dtype=self.dtype)
      h = conv()(h) * nn.sigmoid(conv()(h))
    return h.reshape(h.shape[0], -1) if self.flatten else h


class ConvTopEncoder(nn.Module):
  """q(z2 | x) of the ConvHVAE: the gated convolution stack, then the mean and clamped log-variance."""
  latent_dim: int
  log_variance_range: Tuple[float, ...] = (-6.0, 2.0)
  weight_init: str = "he_normal"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, label_onehot=None):
    del label_onehot
    h = GatedConvStack(TOP_ENCODER_CONVS, dtype=self.dtype)(x)
    return networks.GaussianHead(self.latent_dim, networks.kernel_init(None, self.weight_init), self.log_variance_range,
                                 self.dtype, name=networks.HEAD)(h)


class BottomEncoder(nn.Module):
  """q(z1 | x, z2) from the image's features (once per image) and samples z2 (..., batch, d2): z2 through one
  hidden layer as wide as the features, both concatenated, the `joint_sizes` layers, the mean and log-variance."""
  joint_sizes: Sequence[int]
  latent_dim: int
  hidden_layer: str = "gated"
  activation: str = "relu"
  weight_init: str = "he_normal"
  log_variance_range: Tuple[float, ...] = (-6.0, 2.0)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features, z2):
    layer = _layer_fn(self.hidden_layer, self.activation, self.weight_init, self.dtype)
    from_z2 = layer(z2.astype(self.dtype), features.shape[-1])
    features, from_z2 = jnp.broadcast_arrays(features.astype(self.dtype), from_z2)  # One image, its k samples.
    h = jnp.concatenate([features, from_z2], axis=-1)
    for size in self.joint_sizes:
      h = layer(h, size)
    return networks.GaussianHead(self.latent_dim, networks.kernel_init(None, self.weight_init), self.log_variance_range,
                                 self.dtype, name=networks.HEAD)(h)


class JointDecoder(nn.Module):
  """p(x | z1, z2): z1 and z2 each through one hidden layer of `hidden_sizes[0]`, concatenated, the layers of
  `hidden_sizes[1:]`, then an output layer to the image. With `convs` (the ConvHVAE's), the concatenation goes
  straight into an image-sized hidden layer (convHVAE_2level's `p_x_layers_joint_pre`, 600 -> 784: no joint
  layers between), followed by gated 3 x 3 convolutions and a 1 x 1 convolution."""
  hidden_sizes: Sequence[int]
  image_shape: Sequence[int]
  outputs_per_pixel: int = 1
  convs: Sequence[Tuple[int, int, int]] = ()
  hidden_layer: str = "gated"
  activation: str = "relu"
  weight_init: str = "he_normal"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z1, z2):
    layer = _layer_fn(self.hidden_layer, self.activation, self.weight_init, self.dtype)
    h = jnp.concatenate([layer(z1.astype(self.dtype), self.hidden_sizes[0]),
                         layer(z2.astype(self.dtype), self.hidden_sizes[0])], axis=-1)
    joint_sizes = () if self.convs else self.hidden_sizes[1:]  # The ConvHVAE's image-sized layer comes at once.
    for size in joint_sizes:
      h = layer(h, size)
    height, width, channels = self.image_shape
    leading = z1.shape[:-1]
    if not self.convs:
      out = nn.Dense(height * width * channels * self.outputs_per_pixel, dtype=self.dtype,
                     kernel_init=networks.kernel_init(None, self.weight_init))(h)
      return out.astype(jnp.float32).reshape(*leading, height, width, channels * self.outputs_per_pixel)
    image = layer(h, height * width * channels).reshape(-1, height, width, channels)
    h = GatedConvStack(self.convs, flatten=False, dtype=self.dtype)(image)
    out = nn.Conv(channels * self.outputs_per_pixel, (1, 1), kernel_init=TORCH_CONV_INIT, dtype=self.dtype)(h)
    return out.astype(jnp.float32).reshape(*leading, height, width, channels * self.outputs_per_pixel)


class HVAE(priors.ModelWithPrior):
  """The VampPrior paper's two-level VAE (Tomczak & Welling 2018; Exemplar-VAE's `HVAE_2level` and
  `convHVAE_2level`), built by `build_hvae`.

  Generative model p(z2) p(z1 | z2) p(x | z1, z2), recognition model q(z2 | x) q(z1 | x, z2): the top layer
  z2 carries the prior (`prior`: N(0, I), or the VampPrior on q(z2 | u_k)). `image_features` is the part of
  q(z1 | x, z2) that sees x alone; it runs once per image (`encode_image`), and `log_weight_terms` then handles
  k samples.
  """
  top_encoder: nn.Module  # x -> (mean, log-variance) of q(z2 | x)
  image_features: nn.Module  # x -> features of x for q(z1 | x, z2)
  bottom_encoder: nn.Module  # (features, z2) -> (mean, log-variance) of q(z1 | x, z2)
  bottom_prior: nn.Module  # z2 -> (mean, log-variance) of p(z1 | z2)
  decoder: nn.Module  # (z1, z2) -> decoder output of p(x | z1, z2)
  prior: nn.Module = priors.default_prior()  # p(z2)

  def prior_posterior(self, images):
    return self.top_encoder(images)

  def encode_image(self, x):
    """q(z2 | x) and the features of x that q(z1 | x, z2) reads."""
    return self.top_encoder(x), self.image_features(x)

  def bottom_posterior(self, features, z2):
    """(mean, log-variance) of q(z1 | x, z2) for z2 of shape (..., batch, d2)."""
    return self.bottom_encoder(features, z2)

  def bottom_prior_stats(self, z2):
    """(mean, log-variance) of p(z1 | z2) for z2 of shape (..., d2)."""
    return _over_leading_axes(self.bottom_prior, z2)

  def decode_both(self, z1, z2):
    """The decoder output of p(x | z1, z2), shape (..., H, W, C·outputs_per_pixel)."""
    return self.decoder(z1, z2)

  def log_weight_terms(self, encoded, key, num_samples):
    """For k = `num_samples` draws z2 ~ q(z2|x), z1 ~ q(z1|x,z2): the decoder output of p(x | z1, z2),
    log p(z1, z2) and log q(z1, z2 | x), each with leading axes (k, batch)."""
    (top_mean, top_log_variance), features, prior_statistics = encoded
    top_key, bottom_key = jax.random.split(key)
    z2 = objectives.reparameterize(top_key, top_mean, top_log_variance, num_samples=num_samples)
    bottom_mean, bottom_log_variance = self.bottom_posterior(features, z2)
    z1 = objectives.reparameterize(bottom_key, bottom_mean, bottom_log_variance)
    prior_mean, prior_log_variance = self.bottom_prior_stats(z2)
    log_prior = (self.log_prior(z2, prior_statistics)
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
    encoded = (*self.encode_image(x), self.prior_statistics())
    decoder_output, _, _ = self.log_weight_terms(encoded, key, 1)
    return decoder_output[0]


def build_hvae(hidden_sizes, latent_dim, top_latent_dim, image_shape, outputs_per_pixel, hidden_layer, activation,
               weight_init, log_variance_range, dtype, prior, convolutional=False):
  """The HVAE (`convolutional`: the ConvHVAE) with fully connected layers of `hidden_sizes` ((300, 300) in the
  paper): q(z2|x) and p(z1|z2) have both layers; q(z1|x,z2) and p(x|z1,z2) take each input through a layer of
  `hidden_sizes[0]`, concatenate, and add the layers of `hidden_sizes[1:]`. The ConvHVAE replaces q(z2|x)'s and
  q(z1|x,z2)'s image layers by gated convolution stacks, and in p(x|z1,z2) the concatenation by an image-sized
  layer and gated convolutions."""
  layers = dict(hidden_layer=hidden_layer, activation=activation, weight_init=weight_init, dtype=dtype)
  stats = dict(log_variance_range=log_variance_range, **layers)
  if convolutional:
    top_encoder = ConvTopEncoder(top_latent_dim, log_variance_range, weight_init, dtype)
    image_features = GatedConvStack(BOTTOM_ENCODER_CONVS, dtype=dtype)
  else:
    top_encoder = networks.MLPEncoder(hidden_sizes, top_latent_dim, **stats)
    image_features = DenseFeatures(hidden_sizes[:1], **layers)
  return HVAE(
      top_encoder=top_encoder, image_features=image_features,
      bottom_encoder=BottomEncoder(hidden_sizes[1:], latent_dim, **stats),
      bottom_prior=networks.MLPEncoder(hidden_sizes, latent_dim, **stats),
      decoder=JointDecoder(hidden_sizes, image_shape, outputs_per_pixel, DECODER_CONVS if convolutional else (),
                           **layers),
      prior=prior)
