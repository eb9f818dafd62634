"""Settings every family shares, as a frozen dataclass whose field names are the flag names, and the
JSON form a run records in its `config.json`."""

import dataclasses
import math
import numbers
import os
import typing
from typing import Optional

from gen_jax.errors import UserError

# Settings that may change when a run is resumed: they change when or how long, never what is computed.
MAY_CHANGE_ON_RESUME = frozenset({
    "num_epochs", "num_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "steps_per_dispatch", "data_dir", "eval_batch_size", "profile_start_step", "profile_steps"})

RUN_LENGTH = frozenset({"num_epochs", "num_steps"})


def may_change_on_resume(config, may_change):
  """`may_change` (a family's MAY_CHANGE_ON_RESUME) for a run of `config`: less the run's length when the
  learning-rate schedule is a function of it. Cosine decays to 0 at the last step, so a run resumed with
  another length would follow neither its own schedule nor a fresh run's."""
  if why_length_is_fixed(config.lr_schedule):
    return may_change - RUN_LENGTH
  return may_change


def why_length_is_fixed(lr_schedule):
  """Why a run of this learning-rate schedule keeps its length (RUN_LENGTH) on resume, in words; None if it
  need not. The refusal of another length says it: the length alone looks like a setting free to change."""
  from gen_jax import optim  # Same layer; imported here so that reading a config never loads optax.
  if lr_schedule in optim.LENGTH_DEPENDENT_SCHEDULES:
    return (f"--lr_schedule={lr_schedule} decays the learning rate to 0 over the run's whole length, so a resume "
            "keeps the length it started with")
  return None


# The help of a setting a family has (every family shares TrainingConfig's fields) but never reads: an
# experiment's --help leaves it out and --helpfull says so, rather than advertise a flag whose every other value
# is refused (`check_not_read`).
NOT_READ_HELP = "Not read by this family"


def not_read_help(why):
  """A family's HELP text for a shared setting it never reads; `why`: the reason, in words."""
  return f"{NOT_READ_HELP} ({why}); only the default is accepted."


COMPUTE_DTYPES = ("float32", "bfloat16")
# none: intensities in [0, 1]; dynamic: a fresh Bernoulli draw per batch; static: one fixed draw.
BINARIZATIONS = ("none", "dynamic", "static")
# How a binarised run draws its validation and test bits once (gen_jax.data.image_data.HELD_OUT_DRAWS).
HELD_OUT_BINARIZATIONS = ("own_seeds", "vampprior_code")
# The key of config.json that names the run's family (the registry's name for it).
FAMILY_KEY = "family"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  seed: int = 0
  # Data.
  dataset: str = "fashion_mnist"
  data_dir: Optional[str] = None
  num_train_examples: int = 0  # 0: the whole split.
  num_test_examples: int = 0
  image_size: int = 0  # 0: the dataset's own size (required for images:DIR).
  binarization: str = "dynamic"  # none, dynamic (fresh draw per batch) or static (one fixed draw).
  held_out_binarization: str = "own_seeds"  # The fixed draw of the validation and test bits.
  # Optimisation.
  batch_size: int = 128
  num_epochs: int = 10
  num_steps: int = 0  # > 0 overrides num_epochs.
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_schedule: str = "constant"
  lr_decay_every_steps: int = 10000
  lr_decay_factor: float = 0.1
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  momentum: float = 0.0
  weight_decay: float = 0.0
  grad_clip_norm: float = 0.0
  compute_dtype: str = "float32"
  # Cadence.
  log_every_steps: int = 100
  eval_every_steps: int = 0  # 0: after every epoch.
  checkpoint_every_steps: int = 0  # 0: after every epoch.
  keep_checkpoints: int = 3
  steps_per_dispatch: int = 32
  eval_batch_size: int = 1000
  num_samples: int = 10000  # Size of samples.npy at the end.
  # A jax.profiler trace of the training steps from profile_start_step on, in the workdir's tensorboard/.
  profile_start_step: int = 0
  profile_steps: int = 0  # 0: no trace.


def check_positive(config, names):
  """One line naming the first field that is not positive."""
  for name in names:
    value = getattr(config, name)
    if not value > 0:
      raise UserError(f"--{name}={value} is not allowed; allowed: a positive number")


def check_non_negative(config, names):
  """One line naming the first field that is negative (or NaN)."""
  for name in names:
    value = getattr(config, name)
    if not value >= 0:
      raise UserError(f"--{name}={value} is not allowed; allowed: zero or a positive number")


def check_sizes(config, names):
  """One line naming the first list of layer sizes that is empty or holds a non-positive size."""
  for name in names:
    sizes = getattr(config, name)
    if not sizes or min(sizes) <= 0:
      raise UserError(f"--{name}={flag_text(sizes)} is not allowed; allowed: a comma-separated list "
                      "of positive sizes")


def check_choice(config, name, allowed):
  value = getattr(config, name)
  if value not in allowed:
    raise UserError(f"--{name}={value!r} is unknown; allowed: {', '.join(allowed)}")


def check_finite(config):
  """One line naming the first float setting that is NaN or infinite (no setting means either)."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, float) and not math.isfinite(value):
      raise UserError(f"--{field.name}={value} is not allowed; allowed: a finite number")


def check_range(config, name, low, high):
  """One line unless low <= value < high."""
  value = getattr(config, name)
  if not low <= value < high:
    raise UserError(f"--{name}={value} is not allowed; allowed: at least {low} and below {high}")


# jax.random.key takes 32-bit seeds here (64-bit types are off): larger ones would silently collide.
MAX_SEED = 2**31 - 1


def validate_common(config):
  check_finite(config)
  check_range(config, "seed", 0, MAX_SEED + 1)
  check_range(config, "adam_b1", 0.0, 1.0)
  check_range(config, "adam_b2", 0.0, 1.0)
  check_positive(config, ("batch_size", "learning_rate", "log_every_steps", "keep_checkpoints",
                          "steps_per_dispatch", "eval_batch_size", "num_samples", "adam_eps",
                          "lr_decay_every_steps", "lr_decay_factor"))
  check_non_negative(config, ("num_epochs", "num_steps", "num_train_examples", "num_test_examples", "image_size",
                              "eval_every_steps", "checkpoint_every_steps", "weight_decay", "grad_clip_norm",
                              "momentum", "profile_start_step", "profile_steps"))
  if config.profile_steps == 0:
    check_not_read(config, ("profile_start_step",), "--profile_steps=0 (no trace)")
  if config.num_epochs == 0 and config.num_steps == 0:
    raise UserError("--num_epochs=0 with --num_steps=0 trains nothing; allowed: a positive value for one")
  check_choice(config, "compute_dtype", COMPUTE_DTYPES)
  check_choice(config, "binarization", BINARIZATIONS)
  check_choice(config, "held_out_binarization", HELD_OUT_BINARIZATIONS)
  check_unread(config, "binarization", {"none": ("held_out_binarization",)})
  from gen_jax import optim  # Same layer; imported here so that reading a config never loads optax.
  check_choice(config, "optimizer", tuple(optim.OPTIMIZERS))
  check_choice(config, "lr_schedule", tuple(optim.SCHEDULES))
  check_unread(config, "optimizer", optim.UNREAD_BY_OPTIMIZER)
  check_unread(config, "lr_schedule", optim.UNREAD_BY_SCHEDULE)


def check_unread(config, choice, unread_by_value):
  """Refuses a non-default value of a setting that the `choice` setting's value makes nobody read (an
  architecture's networks that have no such layer, say): it would be silently ignored.
  `unread_by_value`: choice value -> the names of the settings it leaves unread."""
  value = getattr(config, choice)
  check_not_read(config, unread_by_value.get(value, ()), f"--{choice}={value}", f" with this {choice}")


def check_not_read(config, names, reader, where=""):
  """Refuses a non-default value of any of `names`, which `reader` (who leaves them unread, in words) never
  reads, in one line naming each and its default."""
  defaults = type(config)()
  unread = [name for name in names if getattr(config, name) != getattr(defaults, name)]
  if unread:
    given = " ".join(f"--{name}={flag_text(getattr(config, name))}" for name in unread)
    allowed = ", ".join(f"--{name}={flag_text(getattr(defaults, name))}" for name in unread)
    raise UserError(f"{reader} does not read {given}; allowed: {allowed} (the defaults){where}")


def flag_text(value):
  """A setting as it is written on the command line: a list comma-separated."""
  return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def as_flat_dict(config):
  """The config as JSON-ready values (tuples as lists), for config.json and the resume check."""
  return {key: list(value) if isinstance(value, tuple) else value
          for key, value in dataclasses.asdict(config).items()}


def from_flat_dict(config_class, stored):
  """The `config_class` of a stored flat dict: lists become tuples, keys it lacks take their defaults,
  keys the class does not have (another family's, the family name) are dropped."""
  hints = typing.get_type_hints(config_class)
  values = {}
  for field in dataclasses.fields(config_class):
    if field.name in stored:
      value = stored[field.name]
      values[field.name] = tuple(value) if typing.get_origin(hints[field.name]) is tuple else value
  return config_class(**values)


# A setting given from Python (`gen_jax.train`), by its field's type: what it may be, what it becomes, and how
# the one line a wrong one gets says what is allowed. numpy's values (arrays for lists) and paths are taken as
# Python's; a bool is not a number.
_PYTHON_SETTINGS = {  # type: (what it may be, what it becomes, one allowed, a list of them allowed)
    int: (numbers.Integral, int, "an integer", "integers"),
    float: (numbers.Real, float, "a number", "numbers"),
    bool: (bool, bool, "True or False", "bools"),
    str: (str, str, "a string (one line, no spaces around it)", "strings (one line each)"),
}


def _python_setting(value, hint):
  """`value` as the field of type `hint` holds it, or raises TypeError."""
  if hasattr(value, "tolist") and not isinstance(value, str):  # A numpy array or scalar: Python's own values.
    value = value.tolist()
  if isinstance(value, os.PathLike):
    value = os.fspath(value)
  if typing.get_origin(hint) is tuple:
    if not isinstance(value, (list, tuple)):
      raise TypeError
    return tuple(_python_setting(item, typing.get_args(hint)[0]) for item in value)
  if typing.get_origin(hint) is typing.Union:  # Optional[X]: None, or an X.
    return None if value is None else _python_setting(value, typing.get_args(hint)[0])
  kind, convert, _, _ = _PYTHON_SETTINGS[hint]
  if not isinstance(value, kind) or (hint is not bool and isinstance(value, bool)):
    raise TypeError
  if isinstance(value, str) and (value != value.strip() or "\n" in value):  # A flagfile line could not hold it.
    raise TypeError
  return convert(value)


def _allowed_text(hint):
  if typing.get_origin(hint) is tuple:
    return f"a list of {_PYTHON_SETTINGS[typing.get_args(hint)[0]][3]}"
  if typing.get_origin(hint) is typing.Union:
    return f"{_allowed_text(typing.get_args(hint)[0])} or None"
  return _PYTHON_SETTINGS[hint][2]


def from_settings(config_class, settings, family_name, base=None):
  """`config_class` from settings given as Python keywords (`gen_jax.train`): each one of its fields, of the
  field's type (a list or tuple for a list setting); a UserError of one line names the first that is not.
  Settings not given are `base`'s (a config of the class), or the class's defaults."""
  hints = typing.get_type_hints(config_class)
  names = {field.name for field in dataclasses.fields(config_class)}
  values = {}
  for name, value in settings.items():
    if name not in names:
      raise UserError(f"{name}={value!r} is not a setting of the {family_name} family; allowed: its flags' names "
                      f"(python -m experiments.{family_name} --help)")
    try:
      values[name] = _python_setting(value, hints[name])
    except TypeError:
      raise UserError(f"{name}={value!r} is not allowed; allowed: {_allowed_text(hints[name])}") from None
  return config_class(**values) if base is None else dataclasses.replace(base, **values)


def as_flags_text(config, workdir):
  """flags.txt's text for `config`, however the run started (the command line, `gen_jax.train`): `--workdir` and
  one line per setting, a flagfile that starts the same run."""
  lines = [f"--workdir={workdir}"]
  for name, value in dataclasses.asdict(config).items():
    if value is None:  # An optional flag left unset.
      continue
    lines.append((f"--{name}" if value else f"--no{name}") if isinstance(value, bool) else
                 f"--{name}={flag_text(value)}")
  return "".join(line + "\n" for line in lines)
