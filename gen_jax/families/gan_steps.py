"""The GAN's maths: its two networks, its state, the alternating D/G step and the sampler.

One parameter tree {'generator': ..., 'discriminator': ...} and two optimizers built with
`optax.partition` (optax's `multi_transform`): the discriminator's optimizer runs Adam on the
discriminator's subtree and maps the generator's to `optax.set_to_zero()`, the generator's the other way
round. Each keeps its own state, so a network's Adam moments are touched only by its own steps, and the
frozen network's parameters receive an exact zero update.

One loop step (`update`) is `d_steps_per_g_step` discriminator steps, each on a fresh real batch, then one
generator step, fused into one pure jitted function that `loop.train` runs (and scans many of, for the
cheap toy MLPs). The n_critic D steps are unrolled in Python rather than scanned: there are few of them,
and XLA's CPU convolutions are pathologically slow inside a scan (JAX issue #12868).
"""

import dataclasses
import functools
from typing import Any, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax import objectives, optim
from gen_jax.errors import UserError
from gen_jax.evaluation import chunked
from gen_jax.models import gan as gan_models

SAMPLE_CHUNK = 500  # Samples drawn per jitted call (batch norm uses these chunks' own statistics).


@dataclasses.dataclass(frozen=True)
class Networks:
  """The two modules and what sampling needs to know about them."""
  generator: Any
  discriminator: Any
  latent_dim: int
  num_classes: Optional[int]  # Set for the conditional GAN.
  # Each label's share of the data, when not uniform (self-conditioning's clusters); None: uniform classes.
  label_shares: Optional[Tuple[float, ...]] = None


def _mlp_networks(config, data_shape, classes, dtype):
  image = len(data_shape) == 3
  generator = gan_models.MLPGenerator(config.g_hidden_sizes, tuple(data_shape), config.g_activation,
                                      "tanh" if image else "none", config.g_normalization, classes, dtype,
                                      config.conditioning)
  discriminator = gan_models.MLPDiscriminator(config.d_hidden_sizes, config.d_activation, config.d_normalization,
                                              config.spectral_norm, config.packing, classes, dtype,
                                              config.conditioning)
  return generator, discriminator


def _dcgan_networks(config, data_shape, classes, dtype):
  if len(data_shape) != 3 or gan_models.num_resolution_levels(min(data_shape[:2])) == 0:
    raise UserError(f"--architecture=dcgan needs images with an even side above 8, got shape {data_shape}; "
                    "allowed: 28x28, 32x32, 64x64 ... (set --image_size)")
  generator = gan_models.DCGANGenerator(tuple(data_shape), config.base_features, config.g_normalization,
                                        classes, dtype, config.conditioning)
  discriminator = gan_models.DCGANDiscriminator(config.base_features, config.d_normalization,
                                                config.spectral_norm, config.packing, classes, dtype,
                                                config.conditioning)
  return generator, discriminator


# name -> networks(config, data_shape, num_classes or None, dtype) -> (generator, discriminator).
# mlp: dense layers, for toy points or images; dcgan: convolutional, for images.
ARCHITECTURES = {"mlp": _mlp_networks, "dcgan": _dcgan_networks}


def build_networks(config, data_shape, num_classes=None, label_shares=None):
  """G and D for examples of `data_shape` ((dim,) for toy points, (H, W, C) for images); a conditional GAN's
  fakes draw their labels uniformly, or by `label_shares` when given."""
  classes = num_classes if config.conditional else None
  generator, discriminator = ARCHITECTURES[config.architecture](config, data_shape, classes,
                                                                jnp.dtype(config.compute_dtype))
  return Networks(generator, discriminator, config.latent_dim, classes, label_shares if classes else None)


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

  def critic(d_params, statistics, packed):  # For the penalties: D on packs, statistics left as they are.
    inputs = packed.reshape(-1, *packed.shape[2:])
    return discriminate(networks, d_params, statistics, inputs, labels)[0]

  def loss_fn(params):
    d_params = params["discriminator"]
    real_outputs, updated_d_state = discriminate(networks, d_params, d_state, real, labels, update_stats=True)
    fake_outputs, _ = discriminate(networks, d_params, updated_d_state, fake, labels)
    d_loss, metrics = objectives.discriminator_loss(config.loss, real_outputs, fake_outputs)
    # The penalties judge D as the fake term does. With spectral norm every call takes one more power-iteration
    # step from the statistics it is given (flax iterates even without update_stats): the real term, which
    # stores its step, uses σ from u_{t+1}; the fake term and the penalties, from u_{t+2}. Once u has converged
    # the two agree.
    penalized = functools.partial(critic, d_params, updated_d_state)
    total = d_loss
    if config.gradient_penalty_weight > 0:
      penalty = jnp.mean(objectives.gradient_penalty(penalized,
                                                     _packs(real, config.packing), _packs(fake, config.packing),
                                                     penalty_key))
      total += config.gradient_penalty_weight * penalty
      metrics["gradient_penalty"] = penalty
    if config.r1_weight > 0:
      penalty = jnp.mean(objectives.r1_penalty(penalized, _packs(real, config.packing)))
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
  labels = draw_labels(label_key, batch_size, networks)

  def loss_fn(params):
    fake, updated_g_state = generate(networks, params["generator"], state.model_state["generator"], z, labels)
    # D's parameters come from the state, not from `params`: a constant here, so its gradient is zero without
    # being computed, and g_tx (optax.partition) leaves D and its Adam state untouched.
    fake_outputs, _ = discriminate(networks, state.params["discriminator"], state.model_state["discriminator"],
                                   fake, labels)
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


def draw_labels(key, count, networks):
  """Random labels for `count` fakes of the generator step: uniform, or by the labels' shares; None for an
  unconditional GAN."""
  if networks.num_classes is None:
    return None
  if networks.label_shares is None:
    return jax.random.randint(key, (count,), 0, networks.num_classes)
  return jax.random.categorical(key, jnp.log(jnp.asarray(networks.label_shares)), shape=(count,))


def cycled_labels(count, num_classes):
  """The default labels of `count` class-conditional samples: classes in turn, so every chunk of samples mixes
  the classes as training batches do (batch norm would normalise a one-class batch's class away); None for an
  unconditional GAN (`num_classes` None)."""
  return None if num_classes is None else jnp.arange(count) % num_classes


def spread_labels(count, shares):
  """`count` labels, each label's number its share of `count` rounded by largest remainders, each label's
  occurrences spread evenly over the sequence (the j-th of n at position ≈ (j + ½)/n), so every chunk holds the
  labels in proportion. With equal shares this is `cycled_labels`."""
  shares = np.asarray(shares, np.float64)
  exact = shares * count
  numbers = np.floor(exact).astype(np.int64)
  numbers[np.argsort(-(exact - numbers), kind="stable")[:count - numbers.sum()]] += 1
  labels = np.repeat(np.arange(len(shares)), numbers)
  positions = np.concatenate([(np.arange(number) + 0.5) / number for number in numbers if number])
  return jnp.asarray(labels[np.argsort(positions, kind="stable")], jnp.int32)


def default_labels(count, num_classes, label_shares=None):
  """The labels of `count` samples when none are asked for: `cycled_labels` for uniform classes,
  `spread_labels` for labels with shares (so the samples follow p(x) = Σ_c p(c) p(x | c))."""
  if num_classes is None or label_shares is None:
    return cycled_labels(count, num_classes)
  return spread_labels(count, label_shares)


def make_sampler(networks):
  """sample(g_params, g_state, key, count, labels=None) -> samples in data space, drawn in chunks."""

  @jax.jit
  def sample_chunk(g_params, g_state, z, labels):
    return generate(networks, g_params, g_state, z, labels)[0]

  def sample(g_params, g_state, key, count, labels=None):
    z = jax.random.normal(key, (count, networks.latent_dim), jnp.float32)
    if labels is None:
      labels = default_labels(count, networks.num_classes, networks.label_shares)
    return chunked.map_in_chunks(functools.partial(sample_chunk, g_params, g_state), SAMPLE_CHUNK, z, labels)

  return sample


def bind_steps(config, networks, data_shape, total_steps, steps_per_epoch):
  """(init(key) -> GANState, update(state, batch, key)) for `networks` under the config's two optimizers."""
  d_tx, g_tx = make_optimizers(config, total_steps, steps_per_epoch)
  init = functools.partial(init_state, networks=networks, data_shape=data_shape, d_tx=d_tx, g_tx=g_tx,
                           batch_size=config.packing)
  return init, functools.partial(update, networks=networks, config=config, d_tx=d_tx, g_tx=g_tx)
