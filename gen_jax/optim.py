"""Optimizers and learning-rate schedules from a config, via optax, each chosen from a table.

Adding an optimizer or a schedule is one entry here (plus its test); `--optimizer` and `--lr_schedule`
accept every key of these tables.
"""

import jax
import jax.numpy as jnp
import optax

from gen_jax.errors import UserError

# Burda et al. (2016): 3^i epochs at learning_rate·10^(−i/7) for i = 0..7, 3280 epochs in all.
IWAE_SCHEDULE_STAGES = 8


def iwae_schedule(learning_rate, steps_per_epoch):
  """Burda et al.'s schedule: stage i lasts 3^i epochs at `learning_rate`·10^(−i/7); the last rate stays."""
  boundaries, epoch = {}, 0
  for stage in range(IWAE_SCHEDULE_STAGES - 1):
    epoch += 3**stage
    boundaries[epoch * steps_per_epoch] = 10.0**(-1.0 / 7.0)
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def _iwae_in_epochs(config, total_steps, steps_per_epoch):
  del total_steps
  if not steps_per_epoch:
    raise UserError("--lr_schedule=iwae is defined in epochs and this model family has none; allowed: "
                    f"{', '.join(name for name in SCHEDULES if name != 'iwae')}")
  return iwae_schedule(config.learning_rate, steps_per_epoch)


# name -> schedule(config, total_steps, steps_per_epoch).
SCHEDULES = {
    "constant": lambda config, total_steps, steps_per_epoch: optax.constant_schedule(config.learning_rate),
    # × lr_decay_factor every lr_decay_every_steps.
    "step": lambda config, total_steps, steps_per_epoch: optax.exponential_decay(
        config.learning_rate, transition_steps=config.lr_decay_every_steps, decay_rate=config.lr_decay_factor,
        staircase=True),
    # Decays to 0 by the last step.
    "cosine": lambda config, total_steps, steps_per_epoch: optax.cosine_decay_schedule(
        config.learning_rate, decay_steps=max(total_steps, 1)),
    "iwae": _iwae_in_epochs,
}
# The schedules that are functions of the run's length: a resumed run of one may not change its length.
LENGTH_DEPENDENT_SCHEDULES = frozenset({"cosine"})
# The settings each schedule leaves unread, refused unless at their defaults (`config.check_unread`).
UNREAD_BY_SCHEDULE = {name: ("lr_decay_every_steps", "lr_decay_factor") for name in SCHEDULES if name != "step"}


def normalize_each_parameter(eps=1e-7):
  """Divides every parameter's gradient by its own L2 norm (+ `eps`): the VampPrior code's `AdamNormGrad`
  step before Adam, which makes each parameter's update direction independent of its gradient's scale."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda gradient: gradient / (jnp.linalg.norm(gradient.ravel()) + eps), updates))


def _adam(config, schedule):
  return optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


def _weight_decay(config):
  """L2 on the loss gradient, as in Kingma & Welling's "small weight decay": a list of one transform, or none
  at weight_decay 0 (so that the optimizer state of runs without it keeps its structure across versions)."""
  return [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay > 0 else []


# name -> optimizer(config, learning-rate schedule).
OPTIMIZERS = {
    "adam": _adam,
    # Tomczak & Welling's AdamNormGrad: Adam on per-parameter normalised gradients, the weight decay added
    # after the normalisation, as their code does (before it, it would be rescaled with the gradient).
    "adam_norm_grad": lambda config, schedule: optax.chain(normalize_each_parameter(), *_weight_decay(config),
                                                           _adam(config, schedule)),
    "adagrad": lambda config, schedule: optax.adagrad(schedule),
    "sgd": lambda config, schedule: optax.sgd(schedule, momentum=config.momentum or None),
}
# The settings each optimizer leaves unread, refused unless at their defaults (`config.check_unread`).
ADAM_SETTINGS = ("adam_b1", "adam_b2", "adam_eps")
UNREAD_BY_OPTIMIZER = {"adam": ("momentum",), "adam_norm_grad": ("momentum",),
                       "adagrad": (*ADAM_SETTINGS, "momentum"), "sgd": ADAM_SETTINGS}
# The optimizers that place the weight decay themselves; every other one gets it on the raw gradient.
DECAY_THEIR_OWN_WEIGHTS = frozenset({"adam_norm_grad"})


def _lookup(table, name, flag):
  if name not in table:
    raise UserError(f"--{flag}={name!r} is unknown; allowed: {', '.join(table)}")
  return table[name]


def learning_rate_schedule(config, total_steps, steps_per_epoch=None):
  """The schedule `config.lr_schedule` names (see SCHEDULES)."""
  return _lookup(SCHEDULES, config.lr_schedule, "lr_schedule")(config, total_steps, steps_per_epoch)


def make_optimizer(config, total_steps, steps_per_epoch=None):
  """The optimizer a config asks for (a GAN's D gets a config with its own rate and betas put in)."""
  schedule = learning_rate_schedule(config, total_steps, steps_per_epoch)
  base = _lookup(OPTIMIZERS, config.optimizer, "optimizer")(config, schedule)
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.optimizer not in DECAY_THEIR_OWN_WEIGHTS:
    parts.extend(_weight_decay(config))
  return optax.chain(*parts, base)
