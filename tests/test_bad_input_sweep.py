"""Every flag of every family's experiment, given a wrong type, a negative or zero number, NaN, an empty or
malformed list or an unknown choice, is refused in one line that names it — in-process, parse and validate
only (no data, no training), so the sweep stays fast. The command line turns these refusals into exit
status 2 (tests/test_families.py runs that path for every family)."""

import dataclasses
import typing

import pytest
from absl import flags

from experiments import main as experiment_main
from gen_jax import families
from gen_jax.errors import UserError

# Values that are meaningful and accepted, with what they mean (the flags' help says the same).
ZERO_MEANS = {
    "num_train_examples": "the whole split", "num_test_examples": "the whole split", "image_size": "own size",
    "num_steps": "use --num_epochs", "eval_every_steps": "every epoch", "checkpoint_every_steps": "every epoch",
    "momentum": "none", "weight_decay": "none", "grad_clip_norm": "none", "gaussian_std": "learned",
    "init_std": "--weight_init", "num_validation_examples": "none", "early_stopping_patience": "never",
    "beta": "no KL (an autoencoder with noise)", "kl_warmup_steps": "none", "kl_warmup_epochs": "none",
    "final_iwae_k": "none", "pseudo_input_init_mean": "a mean of 0", "pseudo_input_init_std": "all equal",
    "gradient_penalty_weight": "none", "r1_weight": "none", "d_learning_rate": "the generator's",
    "d_adam_b1": "0", "d_adam_b2": "0", "ema_decay": "raw weights", "num_eval_samples": "only at the end",
    "adam_b1": "no momentum", "adam_b2": "no second-moment memory", "seed": "seed 0",
    "profile_steps": "no trace", "profile_start_step": "the first step",
}
NEGATIVE_MEANS = {"pseudo_input_init_mean": "any finite mean", "d_adam_b1": "the generator's",
                  "d_adam_b2": "the generator's"}
EMPTY_MEANS = {"log_variance_clamp": "no clamp"}
# Free text checked where it is used, before anything is written (an unknown dataset or classifier folder is
# refused when the task is built; tests/test_families.py and test_vae.py cover those).
FREE_TEXT = {"dataset", "data_dir", "classifier"}


def _bad_values(name, hint):
  if hint is bool:
    return ["maybe"]
  if hint is int:
    return ["abc", "1.5"] + (["0"] if name not in ZERO_MEANS else []) + (["-1"] if name not in NEGATIVE_MEANS else [])
  if hint is float:
    return (["abc", "nan", "inf"] + (["0"] if name not in ZERO_MEANS else [])
            + (["-1"] if name not in NEGATIVE_MEANS and name != "pseudo_input_init_mean" else []))
  if typing.get_origin(hint) is tuple:
    return ["a,b", "-1"] + ([""] if name not in EMPTY_MEANS else [])
  return [] if name in FREE_TEXT else ["no_such_choice"]


# Values bad for one family only, at its defaults: a reconstruction grid needs an image and its reconstruction;
# an image GAN's precision and recall (scored by default) need more samples than neighbours.
FAMILY_BAD_VALUES = {("vae", "num_images"): ["1"], ("cvae", "num_images"): ["1"],
                     ("autoencoder", "num_images"): ["1"], ("gan", "num_samples"): ["3"],
                     ("gan", "num_eval_samples"): ["1", "3"]}


def _cases():
  for family_name in families.FAMILIES:
    config_class = families.get(family_name).Config
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
      for value in _bad_values(field.name, hints[field.name]) + FAMILY_BAD_VALUES.get((family_name, field.name), []):
        yield family_name, field.name, value


CASES = list(_cases())


def _refusal(family_name, name, value):
  """The one-line refusal of `--name=value` for the family's experiment, or None if it was accepted."""
  family = families.get(family_name)
  flag_values = flags.FlagValues()
  experiment_main.define_config_flags(family.Config, family.HELP, flag_values)
  try:
    experiment_main.parse_command_line(["experiment", f"--{name}={value}"], family_name, flag_values)
    family.validate(experiment_main.config_from_flags(family.Config, flag_values))
  except UserError as error:
    return str(error)
  return None


def test_the_sweep_covers_every_flag_of_every_family():
  covered = {(family, name) for family, name, _ in CASES}
  for family_name in families.FAMILIES:
    for field in dataclasses.fields(families.get(family_name).Config):
      assert (family_name, field.name) in covered or field.name in FREE_TEXT, (family_name, field.name)
  assert len(CASES) > 300


@pytest.mark.parametrize("family_name", list(families.FAMILIES))
def test_every_bad_value_is_refused_in_one_line_naming_the_flag(family_name):
  accepted, unnamed = [], []
  for family, name, value in CASES:
    if family != family_name:
      continue
    message = _refusal(family, name, value)  # Any other exception fails the test: it would be a traceback.
    if message is None:
      accepted.append(f"--{name}={value}")
    elif "\n" in message.strip() or name not in message or "; allowed: " not in message:
      unnamed.append((f"--{name}={value}", message))
  assert not accepted, accepted
  assert not unnamed, unnamed


def _parse_error(family_name, *argv):
  """The one line `experiments.<family_name> argv...` gets from parsing its command line (or validating it)."""
  family = families.get(family_name)
  flag_values = flags.FlagValues()
  experiment_main.define_config_flags(family.Config, family.HELP, flag_values)
  with pytest.raises(UserError) as refusal:
    experiment_main.parse_command_line(["experiment", *argv], family_name, flag_values)
    family.validate(experiment_main.config_from_flags(family.Config, flag_values))
  assert "\n" not in str(refusal.value)
  return str(refusal.value)


def test_a_flag_mistake_says_what_is_allowed_and_a_flagfiles_says_where_it_is(tmp_path):
  """absl's own words (a ValueError for `--noflag=value`, `invalid literal for int()`, a tuple for a bad bool,
  a flagfile's line given as a command-line argument) become the project's: the value, what is allowed, and the
  flagfile and line it was written on."""
  for argv, expected in [
      (["--noconditional=true"], "--noconditional=true is not allowed (--noconditional takes no value); "
                                 "allowed: --noconditional, or --conditional=true or false"),
      (["--latent_dim=abc"], "--latent_dim=abc is not allowed; allowed: an integer"),
      (["--latent_dim=2.5"], "--latent_dim=2.5 is not allowed; allowed: an integer"),
      (["--beta=x"], "--beta=x is not allowed; allowed: a number"),
      (["--conditional=maybe"], "--conditional=maybe is not allowed; allowed: true or false (--conditional alone "
                                "is true, --noconditional false)"),
      (["--hidden_sizes=64,x"], "--hidden_sizes=64,x is not allowed; allowed: a comma-separated list of integers"),
      (["--latent_dim"], "--latent_dim has no value; allowed: --latent_dim=<an integer>"),
      (["--latent_dm=2"], "--latent_dm is not a flag of this command; allowed: the flags --help lists (did you "
                          "mean --latent_dim?)"),
      (["stray"], "unexpected arguments 'stray'; allowed: --flag=value pairs only, on the command line and in a "
                  "flagfile"),
  ]:
    assert _parse_error("vae", *argv) == expected
  assert "--spectral_norm=true or false" in _parse_error("gan", "--nospectral_norm=1")

  outer, inner, undashed = tmp_path / "outer.cfg", tmp_path / "inner.cfg", tmp_path / "undashed.cfg"
  outer.write_text(f"# The flagfile a user runs.\n--latent_dim=4\n--flagfile={inner}\n")
  inner.write_text("\n--batch_size=8\n--bogus_flag=1\n")
  undashed.write_text("--batch_size=8\nlatent_dim=4\n")
  assert _parse_error("vae", f"--flagfile={outer}") == (
      f"--bogus_flag (in {inner} line 3) is not a flag of this command; allowed: the flags --help lists")
  inner.write_text("\n--batch_size=8\n--prior=vampprior\n")
  assert _parse_error("gan", f"--flagfile={outer}").startswith(
      f"--prior (in {inner} line 3) is not a setting of the gan family")
  inner.write_text("\n--batch_size=8\n--prior=vampprior\n--latent_dim=abc\n")
  assert _parse_error("vae", "--flagfile", str(outer)) == (
      f"--latent_dim=abc (in {inner} line 4) is not allowed; allowed: an integer")
  assert _parse_error("vae", f"--flagfile={undashed}") == (
      f"unexpected arguments 'latent_dim=4' (in {undashed} line 2); allowed: --flag=value pairs only, on the "
      "command line and in a flagfile")
  # The same bad value in a flagfile and on the command line: the one absl meets first is named, with its place.
  assert _parse_error("vae", f"--flagfile={outer}", "--latent_dim=abc").startswith(f"--latent_dim=abc (in {inner}")
  assert _parse_error("vae", "--latent_dim=abc", f"--flagfile={outer}") == (
      "--latent_dim=abc is not allowed; allowed: an integer")
