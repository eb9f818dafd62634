"""The GAN family: config, networks, the alternating D/G step, evaluation on toys and images.

One parameter tree {'generator': ..., 'discriminator': ...} and two optimizers built with
`optax.partition` (optax's `multi_transform`): the discriminator's optimizer runs Adam on the
discriminator's subtree and maps the generator's to `optax.set_to_zero()`, the generator's the other way
round. Each keeps its own state, so a network's Adam moments are touched only by its own steps, and the
frozen network's parameters receive an exact zero update.

One loop step (`update`) is `d_steps_per_g_step` discriminator steps, each on a fresh real batch, then one
generator step, fused into one pure jitted function that `loop.train` runs (and scans many of, for the
cheap toy MLPs). The n_critic D steps are unrolled in Python rather than scanned: there are few of them,
and XLA's CPU convolutions are pathologically slow inside a scan (GUIDE §4).

`train_and_evaluate(config, workdir)` is the one entry point the experiment calls.
"""

import dataclasses
import functools
import os
from typing import Any, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from gen_jax import objectives, plots
from gen_jax.data import preprocessing, toys
from gen_jax.errors import UserError
from gen_jax.evaluation import mode_coverage, sample_quality as sample_quality_lib
from gen_jax.models import gan as gan_models
from gen_jax.models import networks
from gen_jax.train import config as config_lib, gan_figures, image_data, loop, optim, parallel
from gen_jax.train.vae import write_samples

ARCHITECTURES = ("mlp", "dcgan")
TOY_STEPS_PER_EPOCH = 1000  # Toy data has no epochs; for logging and --num_epochs an epoch is 1000 steps.
SAMPLE_CHUNK = 500  # Samples drawn per jitted call (batch norm uses these chunks' own statistics).


@dataclasses.dataclass(frozen=True)
class GANConfig(config_lib.TrainingConfig):
  binarization: str = "none"  # GANs model intensities; binarising is a VAE-likelihood matter.
  architecture: str = "mlp"
  latent_dim: int = 64
  g_hidden_sizes: Tuple[int, ...] = (256, 256, 256)
  d_hidden_sizes: Tuple[int, ...] = (256, 256, 256)
  g_activation: str = "relu"
  d_activation: str = "leaky_relu"
  base_features: int = 64
  g_normalization: str = "none"
  d_normalization: str = "none"
  spectral_norm: bool = False
  packing: int = 1
  loss: str = "non_saturating"
  gradient_penalty_weight: float = 0.0
  r1_weight: float = 0.0
  d_steps_per_g_step: int = 1
  d_learning_rate: float = 0.0  # 0: the generator's --learning_rate.
  d_adam_b1: float = -1.0  # Negative: the generator's --adam_b1.
  d_adam_b2: float = -1.0  # Negative: the generator's --adam_b2.
  ema_decay: float = 0.999  # EMA of G's weights used for evaluation and samples; 0: the raw weights.
  conditional: bool = False
  num_eval_samples: int = mode_coverage.DEFAULT_NUM_SAMPLES
  score_sample_quality: bool = True  # Images: FCD/precision/recall (the dataset's classifier, cached).
  num_images: int = 64


def validate(config):
  config_lib.validate_common(config)
  config_lib.check_positive(config, ("latent_dim", "base_features", "packing", "d_steps_per_g_step",
                                     "num_images"))
  for name in ("g_hidden_sizes", "d_hidden_sizes"):
    sizes = getattr(config, name)
    if not sizes or min(sizes) <= 0:
      raise UserError(f"--{name}={','.join(map(str, sizes))} is not allowed; allowed: a comma-separated list "
                      "of positive sizes")
  config_lib.check_choice(config, "architecture", ARCHITECTURES)
  config_lib.check_choice(config, "loss", objectives.GAN_LOSSES)
  config_lib.check_choice(config, "g_activation", tuple(networks.ACTIVATIONS))
  config_lib.check_choice(config, "d_activation", tuple(networks.ACTIVATIONS))
  config_lib.check_choice(config, "g_normalization", gan_models.NORMALIZATIONS)
  config_lib.check_choice(config, "d_normalization", gan_models.NORMALIZATIONS)
  for name in ("gradient_penalty_weight", "r1_weight", "d_learning_rate", "num_eval_samples"):
    if getattr(config, name) < 0:
      raise UserError(f"--{name}={getattr(config, name)} is not allowed; allowed: zero or a positive number")
  if not 0.0 <= config.ema_decay < 1.0:
    raise UserError(f"--ema_decay={config.ema_decay} is not allowed; allowed: 0 <= value < 1")
  if config.batch_size % config.packing:
    raise UserError(f"--batch_size={config.batch_size} is not a multiple of --packing={config.packing}; allowed: "
                    "a multiple of the packing")
  if (config.gradient_penalty_weight > 0 or config.r1_weight > 0) and config.d_normalization == "batch":
    raise UserError("--d_normalization='batch' with a gradient penalty couples the examples' gradients; "
                    "allowed: --d_normalization=none with --gradient_penalty_weight or --r1_weight")
  if toys.is_toy(config.dataset):
    if config.architecture != "mlp":
      raise UserError(f"--architecture={config.architecture} on the toy --dataset={config.dataset}; allowed: mlp")
    if config.conditional:
      raise UserError(f"--conditional on the toy --dataset={config.dataset}, which has no labels; allowed: an "
                      "image dataset with labels")
    if config.num_eval_samples == 0:
      raise UserError("--num_eval_samples=0 on a toy dataset scores nothing; allowed: a positive number "
                      f"(the protocol uses {mode_coverage.DEFAULT_NUM_SAMPLES})")


@dataclasses.dataclass(frozen=True)
class Networks:
  """The two modules and what sampling needs to know about them."""
  generator: Any
  discriminator: Any
  latent_dim: int
  num_classes: Optional[int]  # Set for the conditional GAN.


def build_networks(config, data_shape, num_classes=None):
  """G and D for examples of `data_shape` ((dim,) for toy points, (H, W, C) for images)."""
  dtype = jnp.dtype(config.compute_dtype)
  classes = num_classes if config.conditional else None
  if config.architecture == "mlp":
    image = len(data_shape) == 3
    generator = gan_models.MLPGenerator(config.g_hidden_sizes, tuple(data_shape), config.g_activation,
                                        "tanh" if image else "none", config.g_normalization, classes, dtype)
    discriminator = gan_models.MLPDiscriminator(config.d_hidden_sizes, config.d_activation, config.d_normalization,
                                                config.spectral_norm, config.packing, classes, dtype)
  else:
    if len(data_shape) != 3 or gan_models.num_resolution_levels(min(data_shape[:2])) == 0:
      raise UserError(f"--architecture=dcgan needs images with an even side above 8, got shape {data_shape}; "
                      "allowed: 28x28, 32x32, 64x64 ... (set --image_size)")
    generator = gan_models.DCGANGenerator(tuple(data_shape), config.base_features, config.g_normalization,
                                          classes, dtype)
    discriminator = gan_models.DCGANDiscriminator(config.base_features, config.d_normalization,
                                                  config.spectral_norm, config.packing, classes, dtype)
  return Networks(generator, discriminator, config.latent_dim, classes)


class GANState(flax.struct.PyTreeNode):
  """Everything a GAN step reads. `model_state` holds each network's non-parameter collections
  (spectral-norm power-iteration vectors, batch-norm averages); `d_steps`/`g_steps` count the updates."""
  step: jax.Array
  params: Any  # {'generator': ..., 'discriminator': ...}
  model_state: Any  # {'generator': ..., 'discriminator': ...}
  d_opt_state: Any
  g_opt_state: Any
  ema_generator: Any
  d_steps: jax.Array
  g_steps: jax.Array


def generate(networks, g_params, g_state, z, labels=None):
  """(samples, updated G collections); samples in data space (toy points, images in [−1, 1])."""
  samples, updated = networks.generator.apply({"params": g_params, **g_state}, z, labels,
                                              mutable=["batch_stats"])
  return samples, updated


def discriminate(networks, d_params, d_state, x, labels=None, update_stats=False):
  """(one raw output per pack, updated D collections); the caller decides whether to keep the update."""
  outputs, updated = networks.discriminator.apply({"params": d_params, **d_state}, x, labels,
                                                  update_stats=update_stats, mutable=["batch_stats"])
  return outputs, updated


def _subtree_labels(params):
  return {name: jax.tree.map(lambda _, name=name: name, subtree) for name, subtree in params.items()}


def make_optimizers(config, total_steps, steps_per_epoch):
  """(d_tx, g_tx): each updates its own subtree of {'generator', 'discriminator'} and zeroes the other's.

  The discriminator's schedule runs over its own update count (d_steps_per_g_step per loop step).
  """
  d_config = dataclasses.replace(
      config, learning_rate=config.d_learning_rate or config.learning_rate,
      adam_b1=config.adam_b1 if config.d_adam_b1 < 0 else config.d_adam_b1,
      adam_b2=config.adam_b2 if config.d_adam_b2 < 0 else config.d_adam_b2)
  d_inner = optim.make_optimizer(d_config, total_steps * config.d_steps_per_g_step,
                                 steps_per_epoch=steps_per_epoch * config.d_steps_per_g_step)
  g_inner = optim.make_optimizer(config, total_steps, steps_per_epoch=steps_per_epoch)
  d_tx = optax.partition({"discriminator": d_inner, "generator": optax.set_to_zero()}, _subtree_labels)
  g_tx = optax.partition({"generator": g_inner, "discriminator": optax.set_to_zero()}, _subtree_labels)
  return d_tx, g_tx


def init_state(key, networks, data_shape, d_tx, g_tx, batch_size):
  g_key, d_key = jax.random.split(key)
  z = jnp.zeros((batch_size, networks.latent_dim), jnp.float32)
  labels = None if networks.num_classes is None else jnp.zeros((batch_size,), jnp.int32)
  g_variables = dict(networks.generator.init(g_key, z, labels))
  x = jnp.zeros((batch_size, *data_shape), jnp.float32)
  d_variables = dict(networks.discriminator.init(d_key, x, labels))
  params = {"generator": g_variables.pop("params"), "discriminator": d_variables.pop("params")}
  zero = jnp.zeros((), jnp.int32)
  return GANState(step=zero, params=params, model_state={"generator": g_variables, "discriminator": d_variables},
                  d_opt_state=d_tx.init(params), g_opt_state=g_tx.init(params),
                  ema_generator=params["generator"], d_steps=zero, g_steps=zero)


def _packs(x, packing):
  """(B, ...) -> (B/m, m, ...), the shape in which a gradient penalty sees what D judges as one input."""
  return x.reshape(x.shape[0] // packing, packing, *x.shape[1:])


def discriminator_step(state, batch, key, networks, config, d_tx):
  """One discriminator update on a real batch and as many fresh fakes; G and its Adam state untouched."""
  z_key, penalty_key = jax.random.split(key)
  real, labels = batch["x"], batch.get("labels")
  z = jax.random.normal(z_key, (real.shape[0], networks.latent_dim), jnp.float32)
  # The fakes are computed outside the loss, so no gradient reaches G; its batch-norm update is dropped.
  fake, _ = generate(networks, state.params["generator"], state.model_state["generator"], z, labels)
  d_state = state.model_state["discriminator"]

  def critic(d_params, packed):  # For the penalties: D on packs, statistics left as they are.
    inputs = packed.reshape(-1, *packed.shape[2:])
    return discriminate(networks, d_params, d_state, inputs, labels)[0]

  def loss_fn(params):
    d_params = params["discriminator"]
    real_outputs, updated_d_state = discriminate(networks, d_params, d_state, real, labels, update_stats=True)
    fake_outputs, _ = discriminate(networks, d_params, updated_d_state, fake, labels)
    d_loss, metrics = objectives.discriminator_loss(config.loss, real_outputs, fake_outputs)
    total = d_loss
    if config.gradient_penalty_weight > 0:
      penalty = jnp.mean(objectives.gradient_penalty(functools.partial(critic, d_params),
                                                     _packs(real, config.packing), _packs(fake, config.packing),
                                                     penalty_key))
      total += config.gradient_penalty_weight * penalty
      metrics["gradient_penalty"] = penalty
    if config.r1_weight > 0:
      penalty = jnp.mean(objectives.r1_penalty(functools.partial(critic, d_params), _packs(real, config.packing)))
      total += 0.5 * config.r1_weight * penalty
      metrics["r1_penalty"] = penalty
    return total, (metrics | {"loss": total}, updated_d_state)

  (_, (metrics, updated_d_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, d_opt_state = d_tx.update(grads, state.d_opt_state, state.params)
  return state.replace(
      params=optax.apply_updates(state.params, updates), d_opt_state=d_opt_state,
      model_state=state.model_state | {"discriminator": updated_d_state},
      d_steps=state.d_steps + 1), metrics


def generator_step(state, key, networks, config, g_tx, batch_size):
  """One generator update through a frozen discriminator; D, its statistics and its Adam state untouched."""
  z_key, label_key = jax.random.split(key)
  z = jax.random.normal(z_key, (batch_size, networks.latent_dim), jnp.float32)
  labels = None
  if networks.num_classes is not None:
    labels = jax.random.randint(label_key, (batch_size,), 0, networks.num_classes)
  frozen_d_params = jax.lax.stop_gradient(state.params["discriminator"])  # No wasted weight gradients.

  def loss_fn(params):
    fake, updated_g_state = generate(networks, params["generator"], state.model_state["generator"], z, labels)
    fake_outputs, _ = discriminate(networks, frozen_d_params, state.model_state["discriminator"], fake, labels)
    g_loss, metrics = objectives.generator_loss(config.loss, fake_outputs)
    return g_loss, (metrics, updated_g_state)

  (_, (metrics, updated_g_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_generator
  if config.ema_decay > 0:
    ema = optax.incremental_update(params["generator"], ema, 1.0 - config.ema_decay)
  return state.replace(params=params, g_opt_state=g_opt_state, ema_generator=ema,
                       model_state=state.model_state | {"generator": updated_g_state},
                       g_steps=state.g_steps + 1), metrics


def update(state, batch, key, networks, config, d_tx, g_tx):
  """`d_steps_per_g_step` D steps on the batch's slices (axis 0), then one G step; pure, jitted by the loop.

  The reported D metrics are those of the last D step, taken just before the G step that follows it.
  """
  keys = jax.random.split(key, config.d_steps_per_g_step + 1)
  for index in range(config.d_steps_per_g_step):
    state, d_metrics = discriminator_step(state, jax.tree.map(lambda a, i=index: a[i], batch), keys[index],
                                          networks, config, d_tx)
  state, g_metrics = generator_step(state, keys[-1], networks, config, g_tx, config.batch_size)
  return state.replace(step=state.step + 1), d_metrics | g_metrics


def evaluation_generator(state, config):
  """The generator weights used for evaluation and samples: the EMA when there is one."""
  return state.ema_generator if config.ema_decay > 0 else state.params["generator"]


def make_sampler(networks):
  """sample(g_params, g_state, key, count, labels=None) -> samples in data space, drawn in chunks."""

  @jax.jit
  def sample_chunk(g_params, g_state, z, labels):
    return generate(networks, g_params, g_state, z, labels)[0]

  def sample(g_params, g_state, key, count, labels=None):
    z = jax.random.normal(key, (count, networks.latent_dim), jnp.float32)
    if networks.num_classes is not None and labels is None:
      labels = jnp.arange(count) % networks.num_classes
    chunks = []
    for start in range(0, count, SAMPLE_CHUNK):
      chunk_labels = None if labels is None else labels[start:start + SAMPLE_CHUNK]
      chunks.append(np.asarray(sample_chunk(g_params, g_state, z[start:start + SAMPLE_CHUNK], chunk_labels)))
    return np.concatenate(chunks)

  return sample


EVALUATION_SALT = 0xE7A1  # The key salt of the generated samples every evaluation scores (and gan_seeds).


def _fixed_key(config, salt):
  """The same draws at every evaluation, so figures and scores show the model changing, not the noise."""
  return jax.random.fold_in(jax.random.key(config.seed), salt)


class _ToyEvaluation:
  """Mode coverage per evaluation, scatter plots or the 1-D frame, samples.npy and the GIF at the end."""

  def __init__(self, networks, config, toy, workdir):
    self.networks, self.config, self.toy, self.workdir = networks, config, toy, workdir
    self.images_dir = os.path.join(workdir, "images")
    self.sample = make_sampler(networks)
    self.real = np.asarray(toy.sample(_fixed_key(config, 0xDA7A), config.num_eval_samples))
    self._d_outputs = jax.jit(lambda d_params, d_state, x: discriminate(networks, d_params, d_state, x)[0])
    # D(x) of one point exists only without packing: a packed D judges m points at once.
    self.probability_of_real = config.packing == 1 and objectives.discriminator_probability(
        config.loss, jnp.zeros(1)) is not None

  def _samples(self, state, key_salt, count):
    return self.sample(evaluation_generator(state, self.config), state.model_state["generator"],
                       _fixed_key(self.config, key_salt), count)

  def evaluate(self, state):
    generated = self._samples(state, EVALUATION_SALT, self.config.num_eval_samples)
    metrics = mode_coverage.score(generated, self.toy.means, self.toy.std)
    if self.probability_of_real:
      # At the optimum D = p_data / (p_data + p_g) = ½ wherever the data are; report how far it is.
      outputs = self._d_outputs(state.params["discriminator"], state.model_state["discriminator"], self.real)
      probability = objectives.discriminator_probability(self.config.loss, outputs)
      metrics["d_mean_abs_deviation_from_half"] = float(jnp.mean(jnp.abs(probability - 0.5)))
    return metrics

  def on_evaluation(self, state, step):
    generated = self._samples(state, EVALUATION_SALT, self.config.num_eval_samples)
    scores = mode_coverage.score(generated, self.toy.means, self.toy.std)
    title = (f"step {step}: {scores['modes']}/{self.toy.num_modes} modes, "
             f"{100 * scores['high_quality']:.1f}% high quality")
    if self.toy.dim == 2:
      low, high = self.toy.support(margin_stds=10.0)
      margin = 0.1 * (high - low)
      gan_figures.save_scatter(os.path.join(self.images_dir, f"scatter_{step:08d}.png"), self.real, generated,
                               title, (low - margin, high + margin))
    else:
      self._density_frame(state, step, generated, title)

  def _density_frame(self, state, step, generated, title):
    low, high = self.toy.support(margin_stds=4.0)
    x = np.linspace(low[0], high[0], 400, dtype=np.float32)[:, None]
    discriminator, label = None, ""
    if self.config.packing == 1:
      outputs = self._d_outputs(state.params["discriminator"], state.model_state["discriminator"], jnp.asarray(x))
      probability = objectives.discriminator_probability(self.config.loss, outputs)
      discriminator = np.asarray(outputs if probability is None else probability)
      label = "critic output" if probability is None else "D(x) (discriminator)"
    gan_figures.save_density_frame(os.path.join(self.images_dir, f"frame_{step:08d}.png"), x[:, 0],
                                   self.toy.density(x), gan_figures.kernel_density(generated, x[:, 0]),
                                   discriminator, title, label)

  def finalize(self, state):
    write_samples(self.workdir, self._samples(state, 0xF1A1, self.config.num_samples))
    pattern = "frame_*.png" if self.toy.dim == 1 else "scatter_*.png"
    gan_figures.save_gif(os.path.join(self.images_dir, "training.gif"), os.path.join(self.images_dir, pattern))
    _plot_training_curves(self.workdir, self.images_dir, ("modes", "high_quality"))


def _plot_training_curves(workdir, images_dir, test_metrics):
  for metric in ("d_loss", "g_loss") + tuple(test_metrics):
    plots.plot_curves([workdir], os.path.join(images_dir, f"{metric}_curve.png"), metric=metric, labels=["GAN"],
                      log_x=False)


class _ImageEvaluation:
  """Sample and interpolation grids per evaluation; sample quality (FCD, precision, recall) and samples.npy.

  Per evaluation `num_eval_samples` samples are scored (0: none); the final evaluation scores
  `num_samples` of them, the same ones written to samples.npy.
  """

  def __init__(self, networks, config, workdir, total_steps, labelled):
    self.networks, self.config, self.workdir, self.total_steps = networks, config, workdir, total_steps
    # The classifier behind the scores is trained on the dataset's labels; unlabelled data get no scores.
    self.scored = config.score_sample_quality and labelled
    if config.score_sample_quality and not labelled:
      logging.warning("--dataset=%s has no labels to train the scoring classifier on; no FCD/precision/recall",
                      config.dataset)
    self.images_dir = os.path.join(workdir, "images")
    self.sample = make_sampler(networks)
    self.grid_key = _fixed_key(config, 0x5A3)
    rows, columns = 8, 10
    ends = jax.random.normal(_fixed_key(config, 0x1A7), (2, rows, 1, config.latent_dim))
    t = jnp.linspace(0.0, 1.0, columns)[None, :, None]
    # Straight lines between random pairs of latent codes: DCGAN's "walk in latent space".
    self.interpolation_z = ((1.0 - t) * ends[0] + t * ends[1]).reshape(rows * columns, config.latent_dim)
    self.interpolation_columns = columns
    self._generate = jax.jit(lambda g_params, g_state, z, labels: generate(networks, g_params, g_state, z, labels)[0])

  def _g(self, state):
    return evaluation_generator(state, self.config), state.model_state["generator"]

  def _final_samples(self, state):
    return to_unit_interval(self.sample(*self._g(state), _fixed_key(self.config, 0xF1A1), self.config.num_samples))

  def evaluate(self, state):
    if not self.scored:
      return {}
    if int(jax.device_get(state.step)) >= self.total_steps:
      samples = self._final_samples(state)
    elif self.config.num_eval_samples > 0:
      samples = to_unit_interval(self.sample(*self._g(state), _fixed_key(self.config, EVALUATION_SALT),
                                             self.config.num_eval_samples))
    else:
      return {}
    return sample_quality(samples, self.config)

  def on_evaluation(self, state, step):
    g_params, g_state = self._g(state)
    samples = self.sample(g_params, g_state, self.grid_key, self.config.num_images)
    plots.save_image_grid(os.path.join(self.images_dir, f"samples_{step:08d}.png"), to_unit_interval(samples))
    labels = None
    if self.networks.num_classes is not None:  # One class per row of the walk.
      labels = jnp.repeat(jnp.arange(8) % self.networks.num_classes, self.interpolation_columns)
    walk = self._generate(g_params, g_state, self.interpolation_z, labels)
    plots.save_image_grid(os.path.join(self.images_dir, f"interpolation_{step:08d}.png"),
                          to_unit_interval(np.asarray(walk)), columns=self.interpolation_columns)

  def finalize(self, state):
    write_samples(self.workdir, self._final_samples(state))
    _plot_training_curves(self.workdir, self.images_dir, ("fcd",))


def to_unit_interval(images):
  """Generator images in [−1, 1] -> [0, 1], the contract's range for samples.npy."""
  return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def sample_quality(samples01, config):
  """FCD, precision and recall of [0, 1] images against the dataset's real ones, with their provenance.

  The dataset's classifier is loaded from its cache, or trained and cached on first use.
  """
  scores = sample_quality_lib.score_samples(samples01, config.dataset, data_dir=config.data_dir,
                                            image_size=config.image_size or None)
  return {name: value for name, value in scores.items() if value is not None}


def _image_batch_fn(with_labels, d_steps):
  """make_batch: the step's d_steps·B example indices -> d_steps real batches in [−1, 1] (axis 0)."""

  def make_batch(data, indices, key):
    del key
    indices = indices.reshape(d_steps, -1)
    batch = {"x": 2.0 * preprocessing.to_unit_interval(data["images"][indices]) - 1.0}
    if with_labels:
      batch["labels"] = data["labels"][indices]
    return batch

  return make_batch


def toy_batch_fn(toy, batch_size, d_steps):
  def make_batch(data, step_input, key):
    del data, step_input
    return {"x": toy.sample(key, d_steps * batch_size).reshape(d_steps, batch_size, toy.dim)}

  return make_batch


def bind_steps(config, networks, data_shape, total_steps, steps_per_epoch):
  """(init(key) -> GANState, update(state, batch, key)) for `networks` under the config's two optimizers."""
  d_tx, g_tx = make_optimizers(config, total_steps, steps_per_epoch)
  init = functools.partial(init_state, networks=networks, data_shape=data_shape, d_tx=d_tx, g_tx=g_tx,
                           batch_size=config.packing)
  return init, functools.partial(update, networks=networks, config=config, d_tx=d_tx, g_tx=g_tx)


def make_task(config, workdir, mesh):
  """The GAN as a loop.Task, with its schedule and its networks."""
  validate(config)
  d_steps = config.d_steps_per_g_step
  if toys.is_toy(config.dataset):
    toy = toys.load_toy(config.dataset)
    data_shape, num_classes, steps_per_epoch = (toy.dim,), None, TOY_STEPS_PER_EPOCH
    data = None
    step_inputs = lambda first, count: np.arange(first, first + count)
    make_batch = toy_batch_fn(toy, config.batch_size, d_steps)
  else:
    toy = None
    images = image_data.load_image_data(config)
    if config.conditional and images.train_labels is None:
      raise UserError(f"--conditional needs labels, but --dataset={config.dataset} has none; allowed: a labelled "
                      "dataset (fashion_mnist, mnist, npz with y)")
    data_shape, num_classes = images.image_shape, images.num_classes
    data = images.device_data(with_labels=config.conditional)
    step_inputs, steps_per_epoch = loop.epoch_permutation_indices(
        len(images.train_images), config.batch_size * d_steps, config.seed)
    make_batch = _image_batch_fn(config.conditional, d_steps)
  networks = build_networks(config, data_shape, num_classes)
  total_steps = config.num_steps or config.num_epochs * steps_per_epoch
  schedule = loop.Schedule(
      num_steps=total_steps, steps_per_epoch=steps_per_epoch, batch_size=config.batch_size * d_steps,
      log_every_steps=config.log_every_steps, eval_every_steps=config.eval_every_steps or steps_per_epoch,
      checkpoint_every_steps=config.checkpoint_every_steps or steps_per_epoch,
      keep_checkpoints=config.keep_checkpoints, steps_per_dispatch=config.steps_per_dispatch)
  init, step = bind_steps(config, networks, data_shape, total_steps, steps_per_epoch)
  if toy is not None:
    evaluation = _ToyEvaluation(networks, config, toy, workdir)
  else:
    evaluation = _ImageEvaluation(networks, config, workdir, total_steps, labelled=num_classes is not None)
  task = loop.Task(
      # Jitted: one compilation instead of an eager dispatch (and compilation) per initialiser operation.
      init_state=jax.jit(init), update=step,
      make_batch=make_batch, data=data, step_inputs=step_inputs, evaluate=evaluation.evaluate,
      on_evaluation=evaluation.on_evaluation, finalize=evaluation.finalize)
  return task, schedule, networks


def train_and_evaluate(config, workdir):
  """Trains a GAN and writes the workdir; returns the final state."""
  mesh = parallel.make_mesh()
  task, schedule, _ = make_task(config, workdir, mesh)
  loop.check_resume_config(workdir, config_lib.as_flat_dict(config), config_lib.MAY_CHANGE_ON_RESUME)
  logging.info("GAN: %d steps of %d D step(s) and one G step", schedule.num_steps, config.d_steps_per_g_step)
  return loop.train(task, schedule, workdir, config.seed, mesh)
