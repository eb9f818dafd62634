"""Optimizers and learning-rate schedules from a config, via optax."""

import optax

from gen_jax.errors import UserError

OPTIMIZERS = ("adam", "adagrad", "sgd")
SCHEDULES = ("constant", "step", "cosine", "iwae")
# Burda et al. (2016): 3^i epochs at learning_rate·10^(−i/7) for i = 0..7, 3280 epochs in all.
IWAE_SCHEDULE_STAGES = 8


def iwae_schedule(learning_rate, steps_per_epoch):
  """Burda et al.'s schedule: stage i lasts 3^i epochs at `learning_rate`·10^(−i/7); the last rate stays."""
  boundaries, epoch = {}, 0
  for stage in range(IWAE_SCHEDULE_STAGES - 1):
    epoch += 3**stage
    boundaries[epoch * steps_per_epoch] = 10.0**(-1.0 / 7.0)
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def learning_rate_schedule(config, total_steps, steps_per_epoch=None):
  """constant; step: × `lr_decay_factor` every `lr_decay_every_steps`; cosine: decays to 0 by the end;
  iwae: Burda et al.'s 3^i epochs per stage (needs `steps_per_epoch`)."""
  if config.lr_schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == "step":
    return optax.exponential_decay(config.learning_rate, transition_steps=config.lr_decay_every_steps,
                                   decay_rate=config.lr_decay_factor, staircase=True)
  if config.lr_schedule == "cosine":
    return optax.cosine_decay_schedule(config.learning_rate, decay_steps=max(total_steps, 1))
  if config.lr_schedule == "iwae":
    if not steps_per_epoch:
      raise UserError("--lr_schedule=iwae is defined in epochs and this model family has none; allowed: "
                      f"{', '.join(s for s in SCHEDULES if s != 'iwae')}")
    return iwae_schedule(config.learning_rate, steps_per_epoch)
  raise UserError(f"--lr_schedule={config.lr_schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}")


def make_optimizer(config, total_steps, learning_rate=None, b1=None, steps_per_epoch=None):
  """The optimizer a config asks for; `learning_rate`/`b1` override the config's (e.g. for a GAN's D and G)."""
  schedule = (learning_rate_schedule(config, total_steps, steps_per_epoch) if learning_rate is None
              else learning_rate)
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
