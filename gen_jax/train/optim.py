"""Optimizers and learning-rate schedules from a config, via optax."""

import optax

from gen_jax.errors import UserError

OPTIMIZERS = ("adam", "adagrad", "sgd")
SCHEDULES = ("constant", "step", "cosine")


def learning_rate_schedule(config, total_steps):
  """constant; step: × `lr_decay_factor` every `lr_decay_every_steps`; cosine: decays to 0 by the end."""
  if config.lr_schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == "step":
    return optax.exponential_decay(config.learning_rate, transition_steps=config.lr_decay_every_steps,
                                   decay_rate=config.lr_decay_factor, staircase=True)
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate, decay_steps=max(total_steps, 1))
  raise UserError(f"--lr_schedule={config.lr_schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}")


def make_optimizer(config, total_steps, learning_rate=None, b1=None):
  """The optimizer a config asks for; `learning_rate`/`b1` override the config's (e.g. for a GAN's D and G)."""
  schedule = learning_rate_schedule(config, total_steps) if learning_rate is None else learning_rate
  if config.optimizer == "adam":
    base = optax.adam(schedule, b1=config.adam_b1 if b1 is None else b1, b2=config.adam_b2, eps=config.adam_eps)
  elif config.optimizer == "adagrad":
    base = optax.adagrad(schedule)
  elif config.optimizer == "sgd":
    base = optax.sgd(schedule, momentum=config.momentum or None)
  else:
    raise UserError(f"--optimizer={config.optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.weight_decay > 0:  # L2 on the loss gradient, as in Kingma & Welling's "small weight decay".
    parts.append(optax.add_decayed_weights(config.weight_decay))
  return optax.chain(*parts, base)
