"""What the latent-code families (VAE, CVAE, autoencoder) share: their network settings and architectures,
the model over `image_training`'s skeleton (data, batches, schedule, optimizer, state, model selection),
figures, samples and code operations.

A family composes these parts with its own objective and evaluation:

  parts = latent_code.build(config, mesh)                 # data loaded, model built; nothing written
  evaluate = parts.split_evaluator(my_sums)               # masked sums over the test split
  return parts.task(workdir, update=my_step, evaluate=..., operations=..., headline="elbo")
"""

import dataclasses
import functools
import os
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import config as config_lib, objectives, plots, salts
from gen_jax.data import image_data
from gen_jax.errors import UserError
from gen_jax.evaluation import chunked
from gen_jax.families import image_training
from gen_jax.models import hierarchical, networks, priors, vae as vae_model

CHUNK = 1000  # Codes or images per jitted call of the operations.

HELP = {
    "architecture": "mlp, conv (convolutional encoder/decoder), two_layer (two stochastic layers, IWAE), hvae or "
                    "conv_hvae (the VampPrior paper's two-level VAE, fully connected or convolutional).",
    "hidden_sizes": "Encoder hidden layer sizes; the decoder mirrors them.",
    "latent_dim": "Dimension of the code z.",
    "activation": "relu, tanh, leaky_relu or elu.",
    "likelihood": "Decoder likelihood p(x|z): bernoulli, gaussian or continuous_bernoulli.",
    "gaussian_std": "Fixed decoder std for --likelihood=gaussian (0: learned per pixel).",
    "init_std": "mlp, two_layer: weights drawn from N(0, init_std^2) (0: --weight_init).",
    "num_images": "Images in each reconstruction/sample grid.",
    "top_hidden_sizes": "two_layer: hidden sizes between h1 (--latent_dim) and h2 (--top_latent_dim).",
    "top_latent_dim": "two_layer, hvae, conv_hvae: dimension of the top stochastic layer (the prior's).",
    "hidden_layer": "mlp, hvae, conv_hvae: dense (Dense + --activation) or gated ((W1 x + b1) * sigmoid(W2 x + "
                    "b2), VampPrior's).",
    "weight_init": "mlp, hvae, conv_hvae: lecun_normal (Flax's default) or he_normal (N(0, 2/fan_in)); "
                   "--init_std > 0 overrides.",
    "log_variance_clamp": "mlp, hvae, conv_hvae: low,high: encoder log-variances clamped (hard tanh) to "
                          "[low, high]; empty: none.",
} | image_training.HELP


@dataclasses.dataclass(frozen=True)
class NetworkConfig(image_training.SelectionConfig):
  """The encoder/decoder settings every latent-code family shares."""
  architecture: str = "mlp"
  hidden_sizes: Tuple[int, ...] = (512, 256)
  latent_dim: int = 20
  activation: str = "relu"
  likelihood: str = "bernoulli"
  gaussian_std: float = 0.0  # > 0: fixed decoder std; 0: learned per-pixel variance (gaussian only).
  init_std: float = 0.0  # > 0: N(0, init_std²) weights (Kingma & Welling use 0.01); 0: Flax's default.
  num_images: int = 64
  top_hidden_sizes: Tuple[int, ...] = (100, 100)  # two_layer only: between h1 (latent_dim) and h2.
  top_latent_dim: int = 50  # two_layer, hvae, conv_hvae: the dimension of the top (prior) layer.
  hidden_layer: str = "dense"  # A key of networks.HIDDEN_LAYERS.
  weight_init: str = "lecun_normal"  # A key of networks.WEIGHT_INITS.
  log_variance_clamp: Tuple[float, ...] = ()  # (low, high): clamp of the encoders' log-variances.

  def prior_module(self, image_shape):
    """p(z) on the top latent, a module of `models.priors`: N(0, I), unless a family's config with a choice
    of prior overrides this (the VAE family's --prior)."""
    del image_shape
    return priors.StandardNormal()

  def networks_take_labels(self):
    """Whether the encoder and decoder see the class label: no, unless a family's config with a
    --conditional flag says so (the VAE family's, whose conditional model is the CVAE)."""
    return False

  def kl_warmup_end_step(self, steps_per_epoch):
    """The step where a warm-up of the KL weight ends: 0, unless a family that weighs a KL overrides this.
    Early stopping counts from there, the VampPrior authors' rule."""
    del steps_per_epoch
    return 0


def _mlp_settings(config, init_std, dtype):
  return dict(activation=config.activation, init_std=init_std, dtype=dtype, hidden_layer=config.hidden_layer,
              weight_init=config.weight_init)


def _mlp(config, image_shape, num_classes, outputs_per_pixel, init_std, dtype, prior):
  settings = _mlp_settings(config, init_std, dtype)
  encoder = networks.MLPEncoder(config.hidden_sizes, config.latent_dim,
                                log_variance_range=config.log_variance_clamp, **settings)
  decoder = networks.MLPDecoder(tuple(reversed(config.hidden_sizes)), image_shape, outputs_per_pixel, **settings)
  return vae_model.VAE(encoder, decoder, num_classes, prior)


def _conv(config, image_shape, num_classes, outputs_per_pixel, init_std, dtype, prior):
  del init_std
  if image_shape[0] % 4 or image_shape[1] % 4:
    raise UserError(f"--architecture=conv needs image sides divisible by 4, got {image_shape[:2]}; allowed: "
                    "28, 32, 64 ... (set --image_size)")
  encoder = networks.ConvEncoder(config.latent_dim, activation=config.activation, dtype=dtype)
  decoder = networks.ConvDecoder(image_shape, outputs_per_pixel, activation=config.activation, dtype=dtype)
  return vae_model.VAE(encoder, decoder, num_classes, prior)


def _two_layer(config, image_shape, num_classes, outputs_per_pixel, init_std, dtype, prior):
  del num_classes  # `validate_network` refuses two_layer with --conditional.
  return hierarchical.build_two_layer_vae(config.hidden_sizes, config.latent_dim, config.top_hidden_sizes,
                                          config.top_latent_dim, image_shape, outputs_per_pixel,
                                          config.activation, init_std, dtype, prior)


def _hvae(config, image_shape, num_classes, outputs_per_pixel, init_std, dtype, prior, convolutional=False):
  del num_classes, init_std  # Unconditional; initialised by --weight_init.
  return hierarchical.build_hvae(config.hidden_sizes, config.latent_dim, config.top_latent_dim, image_shape,
                                 outputs_per_pixel, config.hidden_layer, config.activation, config.weight_init,
                                 config.log_variance_clamp, dtype, prior, convolutional)


def _conv_hvae(config, image_shape, *args):
  if tuple(image_shape[:2]) != (28, 28):
    raise UserError(f"--architecture=conv_hvae is the 28 x 28 ConvHVAE, got images of {image_shape[:2]}; allowed: "
                    "28 x 28 images (set --image_size=28)")
  return _hvae(config, image_shape, *args, convolutional=True)


# name -> build(config, image_shape, num_classes, outputs_per_pixel, init_std, dtype, prior) -> module, where
# `prior` is the module of p(z) on the top latent (`config.prior_module`).
# two_layer: two stochastic layers, x-hidden_sizes-latent_dim-top_hidden_sizes-top_latent_dim (IWAE, Table 1);
# hvae: the VampPrior paper's two-level VAE, q(z2|x) q(z1|x,z2), p(z2) p(z1|z2) p(x|z1,z2); conv_hvae: its
# ConvHVAE, with gated convolutions where it sees or writes images.
ARCHITECTURES = {"mlp": _mlp, "conv": _conv, "two_layer": _two_layer, "hvae": _hvae, "conv_hvae": _conv_hvae}
# Settings that a value of another setting leaves unread (`config.check_unread`): a value other than the
# default would be silently ignored, so it is refused. Per architecture, what its networks do not read: the
# top layer's sizes without a top layer (the HVAEs size every hidden layer by --hidden_sizes). A gated layer's
# sigmoid is its nonlinearity, and only the Gaussian decoder has a std. (--hidden_sizes is left out
# under conv: its networks have their own, fixed layers, and a flagfile's MLP sizes under an
# --architecture=conv override mean nothing worse than that.)
_NO_TOP_LAYER = ("top_hidden_sizes", "top_latent_dim")
UNREAD_SETTINGS = {
    "architecture": {
        "mlp": _NO_TOP_LAYER,
        "conv": ("init_std", "hidden_layer", "weight_init", "log_variance_clamp", *_NO_TOP_LAYER),
        "two_layer": ("hidden_layer", "weight_init", "log_variance_clamp"),
        "hvae": ("init_std", "top_hidden_sizes"),
        "conv_hvae": ("init_std", "top_hidden_sizes"),
    },
    "hidden_layer": {"gated": ("activation",)},
    "likelihood": {"bernoulli": ("gaussian_std",), "continuous_bernoulli": ("gaussian_std",)},
}
# Architectures with a latent layer (the prior's) above a bottom one; none of them takes a label.
TWO_LEVEL_ARCHITECTURES = ("two_layer", "hvae", "conv_hvae")


def validate_network(config):
  config_lib.validate_common(config)
  config_lib.check_positive(config, ("latent_dim",))
  if not config.num_images >= 2:  # Half the grid shows test images, half their reconstructions.
    raise UserError(f"--num_images={config.num_images} is not allowed; allowed: at least 2 (the reconstruction "
                    "grid pairs each test image with its reconstruction)")
  config_lib.check_sizes(config, ("hidden_sizes",))
  config_lib.check_choice(config, "architecture", tuple(ARCHITECTURES))
  config_lib.check_choice(config, "activation", tuple(networks.ACTIVATIONS))
  config_lib.check_choice(config, "likelihood", tuple(objectives.LIKELIHOODS))
  config_lib.check_non_negative(config, ("gaussian_std", "init_std"))
  config_lib.check_choice(config, "hidden_layer", tuple(networks.HIDDEN_LAYERS))
  config_lib.check_choice(config, "weight_init", tuple(networks.WEIGHT_INITS))
  image_training.validate_selection(config)
  for choice, unread_by_value in UNREAD_SETTINGS.items():
    config_lib.check_unread(config, choice, unread_by_value)
  clamp = config.log_variance_clamp
  if clamp and (len(clamp) != 2 or not clamp[0] < clamp[1]):
    raise UserError(f"--log_variance_clamp={config_lib.flag_text(clamp)} is not allowed; allowed: empty or "
                    "low,high with low < high (e.g. -6,2)")
  if config.networks_take_labels() and config.architecture in TWO_LEVEL_ARCHITECTURES:
    raise UserError(f"--architecture={config.architecture} with --conditional is not supported; allowed: mlp or "
                    "conv for the conditional VAE")
  # For the architectures that read them (elsewhere the table has refused any value but the default).
  config_lib.check_sizes(config, ("top_hidden_sizes",))
  config_lib.check_positive(config, ("top_latent_dim",))


def build_model(config, image_shape, num_classes=None):
  """The model `config.architecture` names; conditional on `num_classes` labels when `config.networks_take_labels()`."""
  outputs_per_pixel = 2 if config.likelihood == "gaussian" and config.gaussian_std == 0 else 1
  classes = num_classes if config.networks_take_labels() else None
  return ARCHITECTURES[config.architecture](config, image_shape, classes, outputs_per_pixel,
                                            config.init_std or None, jnp.dtype(config.compute_dtype),
                                            config.prior_module(image_shape))


def gaussian_std(config):
  return config.gaussian_std or None


def prior_dim(config):
  """The dimension of the latent that p(z) is on: the top layer's for two stochastic layers."""
  return config.top_latent_dim if config.architecture in TWO_LEVEL_ARCHITECTURES else config.latent_dim


class CodeFunctions:
  """The jitted encoder mean, decoder mean and sampler of a latent-code model, run in chunks of `CHUNK`.

  Figures, samples.npy, the CVAE's conditional accuracy and `load_run` all use these, so they can never
  disagree about what a sample or a reconstruction is. Inputs may be numpy or jax arrays; outputs are numpy.
  """

  def __init__(self, model, config, num_classes):
    self.config, self.num_classes = config, num_classes if config.networks_take_labels() else None
    std = gaussian_std(config)
    self._encode = jax.jit(lambda params, x, labels: model.apply(
        {"params": params}, x, labels, method="encode")[0])
    self._decode = jax.jit(lambda params, z, labels: objectives.decoder_mean(
        config.likelihood, model.apply({"params": params}, z, labels, method="decode"), std))
    self._prior_draws = jax.jit(lambda params, key, count: model.apply(
        {"params": params}, key, count, prior_dim(config), method="sample_prior"), static_argnums=2)

  def labels_for(self, labels, count):
    """The labels to generate `count` outputs under: None for an unconditional model (which refuses given
    ones); else the given ones or, by default, the classes in turn."""
    if labels is None and self.num_classes is not None:
      return np.arange(count) % self.num_classes
    return image_data.checked_labels(labels, count, self.num_classes)

  def labels_of_images(self, labels, count):
    """The labels of `count` given images: None for an unconditional model; else required, since a CVAE's
    code, reconstruction and likelihood of an image are under the image's own class."""
    if labels is None and self.num_classes is not None:
      raise UserError(f"a conditional run encodes, reconstructs and scores images under their classes; allowed: "
                      f"labels= with one class in 0..{self.num_classes - 1} per image")
    return image_data.checked_labels(labels, count, self.num_classes)

  def encode(self, params, x, labels=None):
    return chunked.map_in_chunks(functools.partial(self._encode, params), CHUNK, image_data.as_unit_images(x),
                                 self.labels_of_images(labels, len(x)))

  def decode(self, params, z, labels=None):
    z = np.asarray(z, np.float32)
    dim = prior_dim(self.config)
    if z.ndim != 2 or z.shape[1] != dim or not len(z):
      raise UserError(f"codes of shape {z.shape}; allowed: (N, {dim}) with N >= 1, codes of the latent the "
                      "decoder starts from (the top layer's for two stochastic layers)")
    return chunked.map_in_chunks(functools.partial(self._decode, params), CHUNK, z, self.labels_for(labels, len(z)))

  def reconstruct(self, params, x, labels=None):
    labels = self.labels_of_images(labels, len(x))
    return self.decode(params, self.encode(params, x, labels), labels)

  def prior_draws(self, params, key, count):
    """`count` draws of the prior p(z) (the top layer's for two levels), as a numpy array."""
    return np.asarray(self._prior_draws(params, key, count))

  def sample(self, params, count, seed, labels=None):
    """Decoder means at z ~ p(z) drawn from fold_in(key(seed), FINAL_SAMPLES): at the run's own seed and
    `num_samples`, exactly samples.npy."""
    z = self.prior_draws(params, salts.key_for(seed, salts.FINAL_SAMPLES), count)
    return self.decode(params, z, labels)

  def operations(self, state):
    """The `load_run` operations on this state's parameters."""
    params = jax.device_get(state.params)
    return {
        "sample": lambda count, seed, labels: self.sample(params, count, seed, labels),
        "encode": lambda x, labels: self.encode(params, x, labels),
        "decode": lambda z, labels: self.decode(params, z, labels),
        "reconstruct": lambda x, labels: self.reconstruct(params, x, labels),
    }


class _Figures:
  """Reconstruction and sample grids per evaluation; samples.npy and the headline curve at the end."""

  def __init__(self, codes, config, data, workdir, curve_metric, curve_label):
    self.codes, self.config, self.workdir = codes, config, workdir
    self.curve_metric, self.curve_label = curve_metric, curve_label
    self.images_dir = os.path.join(workdir, "images")
    count = min(config.num_images // 2, len(data.test_images))
    self.test_x = image_data.as_unit_images(data.test_images[:count])
    self.test_labels = None if codes.num_classes is None else data.test_labels[:count]
    # The same prior draws at every evaluation, so the sample grids show the model changing, not the noise.
    self.grid_key = salts.key_for(config.seed, salts.IMAGE_GRID)

  def on_evaluation(self, state, step):
    params = jax.device_get(state.params)
    reconstructions = self.codes.reconstruct(params, self.test_x, self.test_labels)
    pairs = np.stack([self.test_x, reconstructions], axis=1)
    pairs = pairs.reshape(-1, *pairs.shape[2:])  # Rows alternate: original, reconstruction.
    plots.save_image_grid(os.path.join(self.images_dir, f"reconstructions_{step:08d}.png"), pairs, columns=8)
    samples = self.codes.decode(params, self.codes.prior_draws(params, self.grid_key, self.config.num_images))
    plots.save_image_grid(os.path.join(self.images_dir, f"samples_{step:08d}.png"), samples, columns=8)

  def finalize(self, state):
    samples = self.codes.sample(jax.device_get(state.params), self.config.num_samples, self.config.seed)
    image_training.save_samples_and_curve(self.workdir, samples, self.curve_metric, self.curve_label)


@dataclasses.dataclass(frozen=True)
class Parts:
  """The pieces a latent-code family assembles into its task (see the module docstring): the model-independent
  `training` (`image_training.ImageTraining`), the model, its code functions and its initial state."""
  training: image_training.ImageTraining
  model: Any
  codes: CodeFunctions
  init_state: Any

  config = property(lambda self: self.training.config)
  data = property(lambda self: self.training.data)
  schedule = property(lambda self: self.training.schedule)
  # The test labels of a conditional model, None otherwise.
  test_labels = property(lambda self: self.data.test_labels if self.training.with_labels else None)

  def split_evaluator(self, sums_fn, split="test"):
    """evaluate(params) over the test (or validation) split from `sums_fn(params, x, labels, mask, key, model,
    config)`."""
    return self.training.split_evaluator(functools.partial(sums_fn, model=self.model, config=self.config), split)

  def task(self, workdir, *, update, evaluate, validation_sums, operations, headline, curve_label,
           identity_keys=(), final_evaluate=None, final_row_identity=None):
    """The loop.Task; `validation_sums` are the masked sums the validation rows report (and select by
    `headline`) when the config holds out a validation split."""
    figures = _Figures(self.codes, self.config, self.data, workdir, headline, curve_label)
    selection = self.training.selection(
        functools.partial(validation_sums, model=self.model, config=self.config), headline,
        patience=self.config.early_stopping_patience,
        start_step=self.config.kl_warmup_end_step(self.schedule.steps_per_epoch))
    return self.training.task(
        init_state=self.init_state, update=update, evaluate=evaluate, on_evaluation=figures.on_evaluation,
        finalize=figures.finalize, operations=operations, headline=headline, identity_keys=identity_keys,
        final_evaluate=final_evaluate or (lambda state: {}), final_row_identity=final_row_identity or {},
        selection=selection)


def build(config, mesh):
  """Data, model, schedule, optimizer and initial state of a latent-code family; writes nothing."""
  conditional = config.networks_take_labels()
  training = image_training.build(config, mesh, config.num_validation_examples,
                                  labels_needed_by="--conditional" if conditional else None)
  data = training.data
  model = build_model(config, data.image_shape, data.num_classes)
  init_state = training.initial_state(model, lambda: (
      jnp.zeros((1, *data.image_shape), jnp.float32), jax.random.key(0),
      jnp.zeros((1,), jnp.int32) if conditional else None))
  return Parts(training=training, model=model, codes=CodeFunctions(model, config, data.num_classes),
               init_state=init_state)
