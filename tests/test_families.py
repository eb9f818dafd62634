"""The house every family lives in: layers that import only downwards, the registry, the shared main (validate,
then prepare the workdir, then run), the run lock, `load_run`, and a new family added from a test module."""

import ast
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags as absl_flags
from flax import linen as nn
from flax.training import train_state

import gen_jax
from gen_jax import config as config_lib, errors, families, optim
from gen_jax.errors import UserError
from gen_jax.families import gan, image_training
from gen_jax.runtime import checkpointing, loop, run as run_lib, workdir as workdir_lib

from conftest import (CHANGING_GRADIENTS, REPO, TINY_VAE_FLAGS, assert_one_line_error, finish, numpy_adam,
                      start_experiment)

# Bottom to top; a module may import from its own layer or below (README, "Layout").
LAYERS = [
    ("gen_jax.errors", "gen_jax.config", "gen_jax.parallel", "gen_jax.optim", "gen_jax.salts",
     "gen_jax.objectives", "gen_jax.plots", "gen_jax.progress", "gen_jax.files"),
    ("gen_jax.data", "gen_jax.models"),
    ("gen_jax.evaluation",),
    ("gen_jax.runtime",),
    ("gen_jax.families",),
    ("gen_jax", "experiments", "scripts"),
]


def _layer(module):
  """The layer of a dotted module name: the longest matching prefix wins (gen_jax itself is the top)."""
  best = None
  for index, prefixes in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
        best = (index, len(prefix))
  return None if best is None else best[0]


def _imports(path, module, is_package):
  """The dotted names `module` (the file at `path`; `is_package`: an `__init__.py`) imports, relative ones resolved."""
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module
      if node.level:  # Relative: one dot is the package the module is in, which an __init__.py is itself.
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
      yield base
      yield from (f"{base}.{alias.name}" for alias in node.names)  # `from .. import families` names a module.


def _upward_imports(path, module, is_package=False):
  """`module` (the file at `path`) -> one line per import that points up a layer."""
  own = _layer(module)
  offences = []
  for imported in _imports(path, module, is_package):
    target = _layer(imported)
    # `from gen_jax.families import vae` names a submodule: its layer is the submodule's.
    if target is not None and target > own and imported != "gen_jax":
      offences.append(f"{module} (layer {own}) imports {imported} (layer {target})")
  return offences


def test_no_module_imports_up_a_layer():
  offences, checked = [], 0
  for top in ("gen_jax", "experiments", "scripts"):
    for directory, _, names in os.walk(os.path.join(REPO, top)):
      for name in sorted(names):
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
          offences += _upward_imports(path, module, is_package=name == "__init__.py")
          checked += 1
  assert checked > 40
  assert not offences, "\n".join(sorted(set(offences)))


def test_the_layer_rule_catches_an_upward_import(tmp_path):
  """The checker itself: an evaluator reaching into training is caught, as are relative imports of a family, of
  a package (`from .. import runtime`) and from a package's `__init__.py` (whose one dot is itself); importing
  from below or beside, or the package root's lazy load_run, is not."""
  path = tmp_path / "evaluator.py"
  path.write_text("import numpy\nfrom gen_jax import parallel\nfrom gen_jax.data import image_data\n"
                  "from gen_jax.runtime import loop\nfrom ..families import vae\nfrom .. import runtime, files\n"
                  "from . import likelihood\n")
  offences = _upward_imports(str(path), "gen_jax.evaluation.evaluator")
  assert offences == ["gen_jax.evaluation.evaluator (layer 2) imports gen_jax.runtime (layer 3)",
                      "gen_jax.evaluation.evaluator (layer 2) imports gen_jax.runtime.loop (layer 3)",
                      "gen_jax.evaluation.evaluator (layer 2) imports gen_jax.families (layer 4)",
                      "gen_jax.evaluation.evaluator (layer 2) imports gen_jax.families.vae (layer 4)",
                      "gen_jax.evaluation.evaluator (layer 2) imports gen_jax.runtime (layer 3)"]
  assert _upward_imports(str(path), "scripts.tool") == []  # The top layer may import anything.
  package = tmp_path / "__init__.py"
  package.write_text("from . import likelihood\nfrom .likelihood import iwae\nfrom ..runtime import loop\n")
  assert _upward_imports(str(package), "gen_jax.evaluation", is_package=True) == [
      "gen_jax.evaluation (layer 2) imports gen_jax.runtime (layer 3)",
      "gen_jax.evaluation (layer 2) imports gen_jax.runtime.loop (layer 3)"]


def test_every_optimizer_and_schedule_in_the_tables_trains():
  params = {"w": jnp.ones((3,))}
  grads = {"w": jnp.full((3,), 0.5)}
  # The first step of each, in closed form, for g = 0.5 and learning rate 0.1: Adam's is −lr·sign(g) (its
  # bias-corrected moments are g and g²), AdamNormGrad's too; Adagrad's −lr·g/√(0.1 + g²) (optax's initial
  # accumulator 0.1); SGD's −lr·g.
  first_steps = {"adam": -0.1, "adam_norm_grad": -0.1, "adagrad": -0.1 * 0.5 / math.sqrt(0.1 + 0.25),
                 "sgd": -0.05}
  assert set(first_steps) == set(optim.OPTIMIZERS)
  for name, expected in first_steps.items():
    tx = optim.make_optimizer(config_lib.TrainingConfig(optimizer=name, learning_rate=0.1), total_steps=10)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-5, err_msg=name)
  # Weight decay joins the raw gradient, and clipping scales the global norm down to its bound (SGD shows both).
  sgd = config_lib.TrainingConfig(optimizer="sgd", learning_rate=0.1)
  for changes, expected in [({"weight_decay": 0.2}, -0.1 * (0.5 + 0.2 * 1.0)),
                            ({"grad_clip_norm": 0.1}, -0.1 * 0.5 * 0.1 / math.sqrt(3 * 0.25))]:
    tx = optim.make_optimizer(dataclasses.replace(sgd, **changes), total_steps=10)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-5, err_msg=str(changes))
  for name in optim.SCHEDULES:
    schedule = optim.learning_rate_schedule(config_lib.TrainingConfig(lr_schedule=name, learning_rate=0.1),
                                            total_steps=10, steps_per_epoch=5)
    assert float(schedule(0)) == pytest.approx(0.1), name
  # The closed forms at steps 0, 5 and 10 of 10 (the iwae schedule's stages have a test of their own).
  config = config_lib.TrainingConfig(learning_rate=0.1, lr_decay_every_steps=4, lr_decay_factor=0.5)
  closed_forms = {"constant": lambda t: 0.1, "step": lambda t: 0.1 * 0.5**(t // 4),
                  "cosine": lambda t: 0.1 * 0.5 * (1 + math.cos(math.pi * t / 10))}
  for name, closed_form in closed_forms.items():
    schedule = optim.learning_rate_schedule(dataclasses.replace(config, lr_schedule=name), total_steps=10)
    for t in (0, 5, 10):
      assert float(schedule(t)) == pytest.approx(closed_form(t), abs=1e-7), (name, t)
  with pytest.raises(UserError, match=f"--optimizer='rmsprop' is unknown; allowed: {', '.join(optim.OPTIMIZERS)}"):
    optim.make_optimizer(config_lib.TrainingConfig(optimizer="rmsprop"), total_steps=10)


def _updates(tx, gradients):
  """The updates `tx` makes for a sequence of gradients of one parameter vector."""
  params = jnp.zeros(gradients.shape[1:], jnp.float32)
  state, updates = tx.init(params), []
  for g in gradients:
    update, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
    updates.append(np.asarray(update))
  return np.array(updates)


def test_the_optimizers_read_their_betas_epsilon_and_momentum():
  """Adam at the defaults, the GAN flagfiles' β1 = 0.5, the IWAE flagfile's ε = 1e-4 and WGAN-GP's paper
  setting (β1 = 0, β2 = 0.9) against Algorithm 1 in float64, and SGD's momentum against v ← μv + g, update
  −lr·v. (rtol 1e-4: optax takes 1 − β2ᵗ in float32, 3e-5 off at β2 = 0.999, t = 2; a wrong β or ε moves an
  update by percents.)"""
  for b1, b2, eps in [(0.9, 0.999, 1e-8), (0.5, 0.999, 1e-8), (0.9, 0.999, 1e-4), (0.0, 0.9, 1e-8)]:
    config = config_lib.TrainingConfig(optimizer="adam", learning_rate=0.1, adam_b1=b1, adam_b2=b2, adam_eps=eps)
    np.testing.assert_allclose(_updates(optim.make_optimizer(config, total_steps=10), CHANGING_GRADIENTS),
                               numpy_adam(CHANGING_GRADIENTS, 0.1, b1, b2, eps), rtol=1e-4,
                               err_msg=str((b1, b2, eps)))
  config = config_lib.TrainingConfig(optimizer="sgd", learning_rate=0.1, momentum=0.9)
  velocity, expected = 0.0, []
  for g in CHANGING_GRADIENTS:
    velocity = 0.9 * velocity + g
    expected.append(-0.1 * velocity)
  np.testing.assert_allclose(_updates(optim.make_optimizer(config, total_steps=10), CHANGING_GRADIENTS), expected,
                             rtol=1e-6)


@pytest.mark.parametrize("family_name, overrides, message", [
    ("vae", dict(momentum=0.9), "--optimizer=adam does not read --momentum=0.9; allowed: --momentum=0.0 (the "
     "defaults) with this optimizer"),
    ("autoencoder", dict(optimizer="sgd", adam_b1=0.5, adam_eps=1e-4),
     "--optimizer=sgd does not read --adam_b1=0.5 --adam_eps=0.0001"),
    ("vae", dict(optimizer="adagrad", momentum=0.9), "--optimizer=adagrad does not read --momentum=0.9"),
    ("vae", dict(lr_schedule="cosine", lr_decay_factor=0.5), "--lr_schedule=cosine does not read --lr_decay_factor"),
    ("gmm", dict(batch_size=64, learning_rate=0.1, momentum=0.9), "the GMM's EM fit does not read "
     "--learning_rate=0.1 --momentum=0.9 --batch_size=64; allowed: --learning_rate=0.001, --momentum=0.0, "
     "--batch_size=128 (the defaults)"),
])
def test_a_setting_the_optimizer_schedule_or_em_leaves_unread_is_refused(family_name, overrides, message):
  family = families.get(family_name)
  with pytest.raises(UserError) as error:
    family.validate(family.Config(**overrides))
  assert message in str(error.value) and "\n" not in str(error.value)
  family.validate(family.Config(**{name: value for name, value in overrides.items() if name in (
      "optimizer", "lr_schedule")}))  # The choice alone is accepted.


# --- A family defined here: a Gaussian N(μ, σ²) fitted by maximum likelihood to draws of N(2, 0.5²) ------

@dataclasses.dataclass(frozen=True)
class TinyConfig(config_lib.TrainingConfig):
  target_mean: float = 2.0
  batch_size: int = 32
  learning_rate: float = 0.2
  log_every_steps: int = 5
  ballast_floats: int = 0  # An unused parameter of this many floats: makes checkpoints big (the full-disk test).


class TinyFamily:
  """What a family module holds, as a class so the test module can define it inline."""
  NAME = "tiny_gaussian"
  Config = TinyConfig
  HELP = {"target_mean": "Mean of the data distribution."}
  MAY_CHANGE_ON_RESUME = config_lib.MAY_CHANGE_ON_RESUME
  OPERATIONS = ("sample",)

  @staticmethod
  def validate(config):
    config_lib.validate_common(config)

  @staticmethod
  def make_task(config, workdir, mesh):
    del workdir, mesh
    schedule = loop.Schedule.from_config(config, steps_per_epoch=10)
    tx = optim.make_optimizer(config, schedule.num_steps)

    def init_state(key):
      del key
      params = {"mean": jnp.zeros(()), "log_std": jnp.zeros(())}
      if config.ballast_floats:
        params["ballast"] = jnp.sin(jnp.arange(config.ballast_floats, dtype=jnp.float32))  # Incompressible.
      return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)

    def update(state, batch, key):
      del key

      def loss_fn(params):
        z = (batch["x"] - params["mean"]) * jnp.exp(-params["log_std"])
        return jnp.mean(0.5 * z**2 + params["log_std"])

      loss, grads = jax.value_and_grad(loss_fn)(state.params)
      return state.apply_gradients(grads=grads), {"loss": loss}

    def make_batch(data, step_input, key):
      del data, step_input
      return {"x": config.target_mean + 0.5 * jax.random.normal(key, (config.batch_size,))}

    def sample(state, count, seed):
      draws = jax.random.normal(jax.random.key(seed), (count,))
      return np.asarray(state.params["mean"] + jnp.exp(state.params["log_std"]) * draws)

    return loop.Task(
        init_state=init_state, update=update, make_batch=make_batch, data=None,
        step_inputs=lambda first, count: np.arange(first, first + count),
        evaluate=lambda state: {"mean": float(state.params["mean"])}, schedule=schedule,
        operations=lambda state: {"sample": lambda count, seed, labels: sample(state, count, seed)})


@pytest.fixture
def tiny_family():
  families.register(TinyFamily.NAME, TinyFamily)
  yield TinyFamily
  del families.FAMILIES[TinyFamily.NAME]


def _through_the_shared_main(workdir, *flags):
  """`experiments.main.run_family` in a fresh process, with this module's family registered."""
  code = ("import sys; sys.path.insert(0, 'tests'); import test_families; from gen_jax import families; "
          "families.register('tiny_gaussian', test_families.TinyFamily); "
          "from experiments import main; main.run_family('tiny_gaussian')")
  return subprocess.run([sys.executable, "-c", code, f"--workdir={workdir}", *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_a_family_defined_in_a_test_trains_through_the_shared_main_resumes_and_opens(tiny_family, tmp_path):
  resumed = tmp_path / "resumed"
  first = _through_the_shared_main(resumed, "--num_steps=20")
  assert first.returncode == 0, first.stderr
  second = _through_the_shared_main(resumed, "--num_steps=40")  # --num_steps may change on resume.
  assert second.returncode == 0, second.stderr
  assert "resuming from the checkpoint at step 20" in second.stdout
  straight = tmp_path / "straight"
  run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=40), str(straight))

  run, reference = gen_jax.load_run(str(resumed)), gen_jax.load_run(str(straight))
  assert run.family == "tiny_gaussian" and run.step == 40 and run.config.num_steps == 20  # As it started.
  for name in ("mean", "log_std"):  # Resumed through the shared main, bit for bit the straight run.
    assert np.asarray(run.params[name]) == np.asarray(reference.params[name])
  assert float(run.params["mean"]) == pytest.approx(2.0, abs=0.3)  # It learns the data's mean.
  assert [row["step"] for row in run.rows if row["split"] == "test"] == [10, 20, 30, 40]
  np.testing.assert_array_equal(run.sample(5, seed=3), reference.sample(5, seed=3))
  with pytest.raises(UserError, match="this tiny_gaussian run has no encode; allowed: .*vae, cvae, autoencoder"):
    run.encode(np.zeros((1, 28, 28, 1)))
  # The command line writes flags.txt as gen_jax.train does: one writer, a block per start with other flags.
  assert (resumed / "flags.txt").read_text().split(workdir_lib.RESUMED_FLAGS_SEPARATOR) == [
      config_lib.as_flags_text(TinyConfig(num_steps=steps), str(resumed)) for steps in (20, 40)]
  assert "--target_mean=2.0" in (resumed / "flags.txt").read_text()
  assert workdir_lib.read_config(str(resumed))["family"] == "tiny_gaussian"
  # A config.json edited by hand is checked as the command line is: the family's make_task never sees it.
  record = json.loads((straight / "config.json").read_text())
  (straight / "config.json").write_text(json.dumps(record | {"batch_size": 0}))
  with pytest.raises(UserError, match="config.json holds settings the tiny_gaussian family refuses: batch_size=0 "
                     "is not allowed"):
    gen_jax.load_run(str(straight))


def test_a_family_that_fails_to_import_leaves_the_hints_about_the_others_intact(tmp_path, monkeypatch):
  """The hints of one-line errors (which families have a flag, which offer an operation) skip a registered family
  whose module raises on import: a typo in a healthy family's command stays one line, exit 2."""
  (tmp_path / "half_edited_family.py").write_text("raise RuntimeError('half-edited')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  families.register("half_edited", "half_edited_family")
  try:
    assert families.families_with("encode") == ["vae", "cvae", "autoencoder"]
    assert families.families_with_setting("prior", excluding="gan") == ["vae", "cvae"]
    with pytest.raises(RuntimeError, match="half-edited"):  # A command about the family itself still shows why.
      families.get("half_edited")
  finally:
    del families.FAMILIES["half_edited"]
  code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from gen_jax import families; "
          "families.register('half_edited', 'half_edited_family'); "
          "from experiments import main; main.run_family('gan')")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path), "--prior=vampprior",
                           f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert_one_line_error(result, "--prior is not a setting of the gan family",
                        "belongs to experiments.vae, experiments.cvae")
  assert result.returncode == 2 and not (tmp_path / "run").exists()


def test_training_from_python_checks_settings_and_writes_a_flagfile_the_command_line_runs(tiny_family, tmp_path):
  """gen_jax.train is the command line's run: its flags.txt, as a flagfile, trains the same run to the bit."""
  refused = tmp_path / "refused"
  for settings, message in [({"no_such": 1}, "no_such=1 is not a setting of the tiny_gaussian family"),
                            ({"num_steps": "20"}, "num_steps='20' is not allowed; allowed: an integer"),
                            ({"target_mean": True}, "target_mean=True is not allowed; allowed: a number"),
                            ({"dataset": "toy\n"}, "dataset='toy\\n' is not allowed; allowed: a string (one line"),
                            ({"batch_size": 0}, "--batch_size=0 is not allowed")]:
    with pytest.raises(UserError, match=re.escape(message)):
      gen_jax.train("tiny_gaussian", str(refused), **settings)
  assert not refused.exists()

  run = gen_jax.train("tiny_gaussian", str(tmp_path / "python"), num_steps=np.int64(20), target_mean=1.5,
                      data_dir=tmp_path / "data")  # numpy's numbers and a path are taken as Python's.
  assert run.step == 20 and run.config.num_steps == 20 and run.config.target_mean == 1.5
  assert run.config.data_dir == str(tmp_path / "data")
  flagfile = tmp_path / "python" / "flags.txt"
  again = _through_the_shared_main(tmp_path / "command_line", f"--flagfile={flagfile}",
                                   f"--workdir={tmp_path / 'command_line'}")
  assert again.returncode == 0, again.stderr
  from_the_command_line = gen_jax.load_run(str(tmp_path / "command_line"))
  assert from_the_command_line.config == run.config
  for name in ("mean", "log_std"):
    assert np.asarray(from_the_command_line.params[name]) == np.asarray(run.params[name])
  # Resumed from Python with the same settings: the same flags, so flags.txt records no new start.
  gen_jax.train("tiny_gaussian", str(tmp_path / "command_line"), num_steps=20, target_mean=1.5,
                data_dir=str(tmp_path / "data"))
  assert workdir_lib.RESUMED_FLAGS_SEPARATOR not in (tmp_path / "command_line" / "flags.txt").read_text()
  # Settings not given are the run's own, not the family's defaults: a run started from a flagfile resumes
  # with none, and is extended by its length alone.
  assert gen_jax.train("tiny_gaussian", str(tmp_path / "command_line")).config == run.config
  extended = gen_jax.train("tiny_gaussian", str(tmp_path / "command_line"), num_steps=30)
  assert extended.step == 30 and extended.config.target_mean == 1.5


# --- An image family on image_training alone: independent Bernoulli pixels, one logit each -----------------

class PixelBernoulli(nn.Module):
  """log p(x) = Σ_d x_d log σ(l_d) + (1 − x_d) log σ(−l_d), per image."""

  @nn.compact
  def __call__(self, x):
    logits = self.param("logits", nn.initializers.zeros, x.shape[1:])
    return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class PixelConfig(image_training.SelectionConfig):
  num_validation_examples: int = 100
  num_train_examples: int = 400
  num_test_examples: int = 100
  batch_size: int = 50
  eval_batch_size: int = 50
  num_steps: int = 12
  eval_every_steps: int = 4
  optimizer: str = "sgd"  # No momentum: the turn after step 4 shows at once.
  learning_rate: float = 1.0


class PixelFamily:
  NAME = "pixel_bernoulli"
  Config = PixelConfig
  HELP = {}
  MAY_CHANGE_ON_RESUME = config_lib.MAY_CHANGE_ON_RESUME
  OPERATIONS = ()

  @staticmethod
  def validate(config):
    config_lib.validate_common(config)
    image_training.validate_selection(config)

  @staticmethod
  def make_task(config, workdir, mesh):
    training = image_training.build(config, mesh, config.num_validation_examples)
    model = PixelBernoulli()

    def update(state, batch, key):  # Maximum likelihood for 4 steps, then the reverse: the best model is step 4's.
      del key
      sign = jnp.where(state.step < 4, -1.0, 1.0)
      loss, grads = jax.value_and_grad(lambda params: sign * jnp.mean(model.apply({"params": params}, batch["x"])))(
          state.params)
      return state.apply_gradients(grads=grads), {"loss": loss}

    def sums(params, x, labels, mask, key):
      del labels, key
      return {"log_likelihood": jnp.sum(model.apply({"params": params}, x) * mask)}

    evaluate = training.split_evaluator(sums)
    return training.task(
        init_state=training.initial_state(model, lambda: (jnp.zeros((1, *training.data.image_shape)),)),
        update=update, evaluate=lambda state: evaluate(state.params), headline="loss",
        selection=training.selection(sums, "log_likelihood", config.early_stopping_patience,
                                     derived=lambda means: {"nats_per_pixel": means["log_likelihood"] / 784}))


def test_an_image_family_on_image_training_alone_gets_data_batches_evaluation_and_selection(tmp_path):
  """The few lines of `image_training`'s docstring make a whole image family: binarised batches, a held-out split
  that selects the model (training turns against the data after step 4), and split means equal to the
  brute-force ones on the run's own splits."""
  families.register(PixelFamily.NAME, PixelFamily)
  try:
    run_lib.train_and_evaluate(PixelFamily, PixelConfig(), str(tmp_path))
    run = gen_jax.load_run(str(tmp_path))
  finally:
    del families.FAMILIES[PixelFamily.NAME]
  logits = np.asarray(run.params["logits"], np.float64)

  def brute_force(images):  # Mean log-likelihood in float64, from the formula, over a whole split.
    x = images.astype(np.float64) / 255.0
    log_p, log_not_p = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
    return float(np.mean(np.sum(x * log_p + (1 - x) * log_not_p, axis=(1, 2, 3))))

  data = run.dataset
  assert len(data.train_images) == 300 and len(data.validation_images) == 100 and len(data.test_images) == 100
  assert set(np.unique(data.test_images)) <= {0, 255}  # Binarised once, as the run's flags say.
  validation = {row["step"]: row["log_likelihood"] for row in run.rows if row["split"] == "validation"}
  (test_row,) = [row for row in run.rows if row["split"] == "test"]
  assert sorted(validation) == [4, 8, 12] and validation[4] > validation[8] > validation[12]
  assert run.step == test_row["step"] == 4  # Selected on the held-out split, not the newest.
  assert validation[run.step] == pytest.approx(brute_force(data.validation_images), rel=1e-5)
  assert all(row["nats_per_pixel"] == pytest.approx(row["log_likelihood"] / 784)
             for row in run.rows if row["split"] == "validation")
  with pytest.raises(UserError, match="--num_validation_examples=400 leaves no training examples"):
    PixelFamily.validate(PixelConfig(num_validation_examples=400))
  assert test_row["log_likelihood"] == pytest.approx(brute_force(data.test_images), rel=1e-5)
  assert test_row["log_likelihood"] > 784 * math.log(0.5)  # Learnt: better than every pixel a coin flip.


# The two guards a command ends through: absl's (experiments and the scripts on absl flags) and argparse's
# (evaluate_samples.py, figures.py, gan_tradeoffs.py, benchmark_iwae.py), which is the one absl's calls.
GUARDS = {
    "experiments.main.run": lambda command: __import__("experiments.main").main.run(lambda argv: command()),
    "errors.exit_on_user_error": lambda command: errors.exit_on_user_error(command),
}


@pytest.mark.parametrize("guard", sorted(GUARDS))
def test_ctrl_c_outside_a_training_loop_ends_in_one_line(guard, monkeypatch, capsys):
  """A SIGINT where no loop turns it into a checkpoint (a script's evaluation, start-up): one line, 130."""
  from absl import logging
  monkeypatch.setattr(sys, "argv", ["evaluate.py"])
  previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's: KeyboardInterrupt.
  previous_verbosity = logging.get_verbosity()  # run() quiets absl's logging.
  try:
    with pytest.raises(SystemExit) as exit_info:
      GUARDS[guard](lambda: os.kill(os.getpid(), signal.SIGINT))
  except KeyboardInterrupt:
    pytest.fail(f"the KeyboardInterrupt escaped {guard}")
  finally:
    signal.signal(signal.SIGINT, previous_handler)
    logging.set_verbosity(previous_verbosity)
  assert exit_info.value.code == 128 + signal.SIGINT
  stderr = capsys.readouterr().err
  assert stderr.count("\n") == 1 and stderr.startswith("stopped by SIGINT; what was written before is intact")


@pytest.mark.parametrize("guard", sorted(GUARDS))
def test_a_commands_reader_going_away_ends_it_quietly(guard):
  """`scripts/figures.py ... | head -1`: the printing command ends at once, as Unix tools do on SIGPIPE, with
  nothing on stderr (no BrokenPipeError, none again at Python's flush at exit)."""
  code = ("import sys; sys.path.insert(0, 'tests'); import test_families; guard = sys.argv.pop(1); "
          "test_families.GUARDS[guard](lambda: [print(line, flush=True) for line in range(10**7)])")
  process = subprocess.Popen([sys.executable, "-c", code, guard], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  assert process.stdout.readline() == "0\n"
  process.stdout.close()  # Every later print meets a pipe with no reader.
  assert process.wait(timeout=120) == 128 + signal.SIGPIPE
  assert process.stderr.read() == ""


def _tree_digest(directory):
  digest = hashlib.sha256()
  for root, dirs, names in os.walk(directory):
    dirs.sort()
    for name in sorted(names):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, directory).encode())
      digest.update(open(path, "rb").read())
  return digest.hexdigest()


def test_refused_runs_leave_every_familys_workdir_byte_for_byte(tmp_path):
  """A bad flag for each family (refused by validation or by the data), a workdir of another family, a
  damaged config.json, and a workdir whose run lock is held: one line each, and no byte changes."""
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "config.json").write_text('{"family": "vae", "seed": 0}')
  (existing / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
  (existing / "flags.txt").write_text("--seed=0\n")
  damaged = tmp_path / "damaged"
  damaged.mkdir()
  (damaged / "config.json").write_text('{"family": "vae", "se')
  edited = tmp_path / "edited"  # A valid flagfile's run whose config.json was edited by hand.
  edited.mkdir()
  (edited / "config.json").write_text(json.dumps(workdir_lib.settings_record("vae", families.get("vae").Config(
      latent_dim=4)) | {"latent_dim": -1}))
  held = tmp_path / "held"
  workdir = f"--workdir={existing}"
  cases = [
      ("vae", ("--batch_size=0", workdir), "--batch_size=0"),
      ("vae", ("--dataset=no_such_dataset", workdir), "no_such_dataset"),
      ("cvae", ("--conditional_samples_per_class=0", workdir), "--conditional_samples_per_class=0"),
      ("autoencoder", ("--hidden_sizes=8,-1", workdir), "--hidden_sizes=8,-1"),
      ("gan", ("--loss=wgan", workdir), "--loss='wgan' is unknown"),
      ("gmm", ("--num_components=0", workdir), "--num_components=0"),
      ("gan", ("--prior=vampprior", workdir), "--prior is not a setting of the gan family"),
      ("vae", ("--noconditional=true", workdir), "--noconditional=true is not allowed"),  # absl's ValueError.
      ("vae", ("--flagfile=experiments/configs/density_vae.cfg", "--num_train_examples=500",
               "--num_validation_examples=500", workdir), "--num_validation_examples=500 leaves no training"),
      ("gan", ("--flagfile=experiments/configs/gan_ring.cfg", "--num_steps=4", workdir), "the 'vae' family"),
      ("vae", (*TINY_VAE_FLAGS, f"--workdir={damaged}"), "config.json cannot be read"),
      ("vae", ("--latent_dim=4", f"--workdir={edited}"), f"{edited}/config.json holds settings the vae family "
       "refuses: latent_dim=-1 is not allowed; allowed: a positive number; it is the run's record, not this "
       "command's flags"),
      ("vae", (*TINY_VAE_FLAGS, f"--workdir={held}"), f"is in use by pid {os.getpid()}"),
      ("vae", (*TINY_VAE_FLAGS, "--workdir=/proc/gen_jax_no_such_dir/run"),
       "--workdir=/proc/gen_jax_no_such_dir/run cannot be written: No such file or directory"),
  ]
  digests = {path: _tree_digest(path) for path in (existing, damaged, edited)}
  with workdir_lib.run_lock(str(held)):
    held_digest = _tree_digest(held)
    processes = [(start_experiment(family, *flags), fragment) for family, flags, fragment in cases]
    results = [(finish(process), fragment) for process, fragment in processes]
    assert _tree_digest(held) == held_digest
  for result, fragment in results:
    assert_one_line_error(result, fragment)
    assert result.returncode == 2
  for path, digest in digests.items():
    assert _tree_digest(path) == digest, path


def test_a_cosine_run_keeps_its_length_on_resume_and_a_constant_one_may_change_it(tmp_path):
  """Cosine decays to 0 at the run's last step: resumed with another length it would follow neither its own
  schedule nor a fresh run's, so the length is refused (before anything is built); a constant rate is not."""
  for schedule, refused in [("cosine", True), ("constant", False)]:
    workdir = tmp_path / schedule
    workdir.mkdir()
    started = gan.Config(dataset="ring", num_steps=100, lr_schedule=schedule)
    (workdir / "config.json").write_text(json.dumps(workdir_lib.settings_record(gan.NAME, started)))
    longer = dataclasses.replace(started, num_steps=200)
    may_change = config_lib.may_change_on_resume(longer, gan.MAY_CHANGE_ON_RESUME)
    assert ("num_steps" not in may_change) == refused and "eval_every_steps" in may_change
    if refused:
      with pytest.raises(UserError, match=re.escape(
          "--num_steps=200 (run has 100); --lr_schedule=cosine decays the learning rate to 0 over the run's "
          "whole length, so a resume keeps the length it started with; allowed: the run's own values")):
        run_lib.train_and_evaluate(families.get(gan.NAME), longer, str(workdir))
      assert sorted(os.listdir(workdir)) == ["config.json"]


def test_a_hand_edited_config_json_is_blamed_and_not_the_flags_of_the_command(tmp_path):
  """The stored record is checked as the family checks flags (types first), and its refusal names the file;
  a valid record, another family's run (check_resumable names that) or no record pass."""
  vae = families.get("vae")
  record = workdir_lib.settings_record("vae", vae.Config())
  for edit, refusal in [({"latent_dim": -1}, "holds settings the vae family refuses: latent_dim=-1 is not allowed; "
                                             "allowed: a positive number; it is the run's record"),
                        ({"latent_dim": "abc"}, "refuses: latent_dim='abc' is not allowed; allowed: an integer"),
                        ({"hidden_sizes": [8, 0]}, "refuses: hidden_sizes=8,0 is not allowed")]:
    (tmp_path / "config.json").write_text(json.dumps(record | edit))
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'config.json'} {refusal}"
                                                  if refusal.startswith("holds") else refusal)):
      workdir_lib.check_stored_config(str(tmp_path), vae)
  for stored in (record, record | {"family": "gan", "latent_dim": -1}):
    (tmp_path / "config.json").write_text(json.dumps(stored))
    workdir_lib.check_stored_config(str(tmp_path), vae)
  workdir_lib.check_stored_config(str(tmp_path / "new"), vae)
  workdir_lib.check_stored_config(None, vae)


def test_flags_txt_ends_with_the_flags_of_the_latest_start(tmp_path):
  """A start with the last block's flags adds nothing, in whatever order and with blank lines (the flags.txt of
  older runs, written by absl, has one for an unset optional flag); one with other flags adds them, earlier ones
  too."""
  settings = workdir_lib.settings_record(TinyFamily.NAME, TinyConfig())
  for flags_text in ("--seed=0\n--batch_size=8\n", "--batch_size=8\n\n--seed=0\n", "--final_iwae_k=10\n",
                     "--seed=0\n--batch_size=8\n"):
    workdir_lib.record(str(tmp_path), settings, set(), flags_text)
  blocks = (tmp_path / "flags.txt").read_text().split(workdir_lib.RESUMED_FLAGS_SEPARATOR)
  assert blocks == ["--seed=0\n--batch_size=8\n", "--final_iwae_k=10\n", "--seed=0\n--batch_size=8\n"]


def _flags_txt_of_older_runs(flag_values, config_class):
  """flags.txt as the command line wrote it before it used `config.as_flags_text`: absl's serialisation, which
  writes a blank line for an unset flag and a list as typed."""
  names = ["workdir"] + [field.name for field in dataclasses.fields(config_class)]
  return "".join(flag_values[name].serialize() + "\n" for name in names)


def test_the_flags_txt_of_an_older_run_is_the_flag_set_the_config_writes_and_resumes_without_a_new_one(
    tiny_family, tmp_path):
  """For each family's defaults and a flagfile that sets its lists (numbers spelled otherwise than the config's
  values: 064, -6, 2e0) and flips its bools, what absl wrote and `as_flags_text` writes are one flag set: a
  resume of an older run with the same flags records no new start, nor does a setting added since, at its
  default."""
  from experiments import main as experiment_main
  respelled = {int: "064,32", float: "-6,2e0"}
  older = {}
  for name in ("vae", "cvae", "autoencoder", "gan", "gmm"):
    family = families.get(name)
    hints = typing.get_type_hints(family.Config)
    flagfile = tmp_path / f"{name}_lists_and_bools.cfg"
    flagfile.write_text("".join(
        f"--{'no' if field.default else ''}{field.name}\n" if hints[field.name] is bool else
        f"--{field.name}={respelled[typing.get_args(hints[field.name])[0]]}\n"
        for field in dataclasses.fields(family.Config)
        if hints[field.name] is bool or typing.get_origin(hints[field.name]) is tuple))
    for case, flags in [("defaults", []), ("flagfile", [f"--flagfile={flagfile}"])]:
      flag_values = absl_flags.FlagValues()
      absl_flags.DEFINE_string("workdir", None, "workdir", flag_values=flag_values)
      experiment_main.define_config_flags(family.Config, family.HELP, flag_values)
      workdir = tmp_path / f"{name}_{case}"
      flag_values(["test", *flags, f"--workdir={workdir}"])
      config = experiment_main.config_from_flags(family.Config, flag_values)
      # And a setting added since these runs were made (2026-12-07), at its default: in neither file.
      text = older[name, case] = "".join(line for line in _flags_txt_of_older_runs(
          flag_values, family.Config).splitlines(keepends=True) if not line.startswith("--held_out_binarization="))
      settings = workdir_lib.settings_record(name, config)
      workdir.mkdir()
      (workdir / "config.json").write_text(json.dumps(
          {key: value for key, value in settings.items() if key != "held_out_binarization"}))
      (workdir / "flags.txt").write_text(text)
      workdir_lib.record(str(workdir), settings, family.MAY_CHANGE_ON_RESUME,
                         config_lib.as_flags_text(config, str(workdir)),
                         defaults=workdir_lib.settings_record(name, family.Config()))
      assert (workdir / "flags.txt").read_text() == text, (name, case)
      # Nor when the latest block does record it (written by a start with other flags since).
      latest = text + workdir_lib.RESUMED_FLAGS_SEPARATOR + config_lib.as_flags_text(config, str(workdir))
      (workdir / "flags.txt").write_text(latest)
      workdir_lib.record(str(workdir), settings, family.MAY_CHANGE_ON_RESUME,
                         config_lib.as_flags_text(config, str(workdir)),
                         defaults=workdir_lib.settings_record(name, family.Config()))
      assert (workdir / "flags.txt").read_text() == latest, (name, case)
  # Other text than the config's (a blank line for the unset --data_dir, lists as typed), the same flags.
  assert "\n\n" in older["gmm", "defaults"]
  assert {"--hidden_sizes=064,32", "--log_variance_clamp=-6,2e0", "--conditional"} <= set(
      older["vae", "flagfile"].splitlines())
  # A whole resume: a run started with the older flags.txt, resumed through the shared main with the same flags.
  workdir = tmp_path / "tiny"
  flag_values = absl_flags.FlagValues()
  absl_flags.DEFINE_string("workdir", None, "workdir", flag_values=flag_values)
  experiment_main.define_config_flags(TinyConfig, {}, flag_values)
  flag_values(["test", "--num_steps=10", f"--workdir={workdir}"])
  text = _flags_txt_of_older_runs(flag_values, TinyConfig)
  run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=10), str(workdir), flags_text=text)
  resumed = _through_the_shared_main(workdir, "--num_steps=10")
  assert resumed.returncode == 0, resumed.stderr
  assert (workdir / "flags.txt").read_text() == text


def test_a_resume_shorter_than_the_runs_progress_is_refused_and_touches_nothing(tiny_family, tmp_path):
  workdir = str(tmp_path / "run")
  run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=20), workdir, flags_text="--num_steps=20\n")
  before = _tree_digest(workdir)
  with pytest.raises(UserError, match=r"holds a checkpoint at step 20, past the last step of this length \(10\); "
                                      r"allowed: --num_epochs or --num_steps that reach step 20"):
    run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=10), workdir, flags_text="--num_steps=10\n")
  assert _tree_digest(workdir) == before


def test_a_run_recorded_before_a_setting_existed_resumes_at_its_default_and_only_there(tmp_path):
  """config.json of a GAN run from before --conditioning existed: resumable with the default (the behaviour
  the run had), refused with any other value."""
  defaults = workdir_lib.settings_record(gan.NAME, gan.Config())
  settings = workdir_lib.settings_record(gan.NAME, gan.Config(dataset="ring"))
  old_record = {key: value for key, value in settings.items() if key != "conditioning"}
  (tmp_path / "config.json").write_text(json.dumps(old_record))
  workdir_lib.check_resumable(str(tmp_path), settings, gan.MAY_CHANGE_ON_RESUME, defaults)
  changed = workdir_lib.settings_record(gan.NAME, gan.Config(dataset="ring", conditioning="projection"))
  with pytest.raises(UserError, match=r"--conditioning=projection \(run has concat\)"):
    workdir_lib.check_resumable(str(tmp_path), changed, gan.MAY_CHANGE_ON_RESUME, defaults)


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 3 MiB tmpfs (needs root and a kernel that lets this process mount); skipped where it cannot be had."""
  mount_point = tmp_path / "small_disk"
  mount_point.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                           capture_output=True)
  if mounted.returncode != 0:
    pytest.skip("cannot mount a tmpfs here (not root?); the patched-write test below covers the metrics path")
  try:
    yield mount_point
  finally:
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_disk_that_fills_during_an_asynchronous_checkpoint_save_stops_in_one_line(tiny_family, small_tmpfs,
                                                                                   capfd):
  """Checkpoints of ~2.4 MB (an unused 600,000-float parameter; its Adam moments stay 0) on a 3 MiB disk: the
  second save runs out of space inside orbax's writer thread. The run ends with the one-line WriteFailed (no
  orbax traceback on stderr), naming the first checkpoint intact, as it is on disk, although with
  --keep_checkpoints=1 orbax had already struck it from its own list; with room again, the same command
  resumes."""
  workdir = str(small_tmpfs / "run")
  config = TinyConfig(num_steps=40, checkpoint_every_steps=10, ballast_floats=600_000, keep_checkpoints=1)
  with pytest.raises(loop.WriteFailed) as info:
    run_lib.train_and_evaluate(tiny_family, config, workdir)
  message = str(info.value)
  assert "\n" not in message and "No space left on device while saving a checkpoint" in message
  intact = re.search(r"the checkpoint at step (\d+) is intact", message)
  assert intact and os.path.isdir(os.path.join(workdir, "checkpoints", intact.group(1)))
  assert "Traceback" not in capfd.readouterr().err
  subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
  state = run_lib.train_and_evaluate(tiny_family, config, workdir)
  assert int(state.step) == 40


def test_a_checkpointer_keeps_only_the_orphaned_callbacks_of_a_failed_save_off_stderr(tmp_path, monkeypatch):
  """After a failed save (a full disk), TensorStore calls asyncio's call_soon_threadsafe, from C, on the loop
  orbax has closed; each RuntimeError went through sys.unraisablehook as a traceback beside the run's one line
  (2 to 26 of them in a run from the command line on a 3 MiB disk; this process's smaller saves do not show
  them). Once a Checkpointer exists exactly those are dropped; any other reaches the hook that was there."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=1).close()
  closed_loop = asyncio.new_event_loop()
  closed_loop.close()
  with pytest.raises(RuntimeError, match="Event loop is closed") as info:
    closed_loop.call_soon_threadsafe(print)
  error = info.value

  def unraisable(exc_value=error, traceback=error.__traceback__.tb_next, obj=None):
    return types.SimpleNamespace(exc_type=type(exc_value), exc_value=exc_value, exc_traceback=traceback,
                                 err_msg=None, object=obj)

  sys.unraisablehook(unraisable())  # As from C: the traceback starts in call_soon_threadsafe.
  assert seen == []
  others = [unraisable(traceback=error.__traceback__),  # Raised under a Python caller of its own.
            unraisable(obj=closed_loop),  # Raised while finalising an object.
            unraisable(exc_value=RuntimeError("another error"))]
  for other in others:
    sys.unraisablehook(other)
  assert seen == others


def test_a_run_started_on_a_full_disk_stops_in_one_line(tiny_family, small_tmpfs):
  """No room for the run lock's text or config.json: one line naming the workdir and the OS error, before the
  run starts; with room again the same command runs."""
  with open(small_tmpfs / "filler", "wb") as filler:
    with pytest.raises(OSError):
      while True:
        filler.write(b"\0" * (1 << 16))
        filler.flush()
  workdir = str(small_tmpfs / "run")
  with pytest.raises(UserError, match=r"--workdir=.* cannot be written: No space left on device.*the run did "
                                      r"not start$") as info:
    run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=10), workdir)
  assert "(None)" not in str(info.value)  # An error of a write to an open file names no file.
  (small_tmpfs / "filler").unlink()
  assert int(run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=10), workdir).step) == 10


def test_a_full_disk_stops_the_run_in_one_line_and_the_same_command_resumes(tiny_family, tmp_path, monkeypatch):
  """ENOSPC from the metrics file at step 30: one line naming the step and the intact checkpoint; once the
  disk has room the same run resumes and ends bit for bit where an uninterrupted run does."""
  import errno
  from gen_jax.runtime import metrics as metrics_lib
  original = metrics_lib.MetricWriter.write

  def full_disk_at_step_30(self, row):
    if row["step"] == 30:
      raise OSError(errno.ENOSPC, "No space left on device", self.path)
    return original(self, row)

  workdir = str(tmp_path / "run")
  monkeypatch.setattr(metrics_lib.MetricWriter, "write", full_disk_at_step_30)
  with pytest.raises(loop.WriteFailed) as info:
    run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=40), workdir)
  message = str(info.value)
  assert "\n" not in message
  assert "at step 30: No space left on device" in message and "metrics.jsonl" in message
  assert "the checkpoint at step 20 is intact" in message and "re-running the same command" in message
  monkeypatch.setattr(metrics_lib.MetricWriter, "write", original)
  run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=40), workdir)
  straight = str(tmp_path / "straight")
  run_lib.train_and_evaluate(tiny_family, TinyConfig(num_steps=40), straight)
  resumed, reference = gen_jax.load_run(workdir), gen_jax.load_run(straight)
  for name in ("mean", "log_std"):
    assert np.asarray(resumed.params[name]) == np.asarray(reference.params[name])
  strip = lambda rows: [{k: v for k, v in row.items() if k not in ("wall_time", "examples_per_sec")} for row in rows]
  assert strip(resumed.rows) == strip(reference.rows)


def test_every_flagfile_is_in_the_readme_table_and_makes_a_config_its_family_accepts():
  """The README's table of experiments names every flagfile in experiments/configs with its command; each one,
  read as that command reads it, gives a config its family's `validate` accepts (no data is loaded)."""
  from experiments import main as experiment_main
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as readme:
    rows = re.findall(r"^\| `experiments\.(\w+)` \| `(\w+\.cfg)` \|", readme.read(), re.MULTILINE)
  assert sorted(flagfile for _, flagfile in rows) == sorted(os.listdir(os.path.join(REPO, "experiments", "configs")))
  for name, flagfile in rows:
    if name == "classifier":  # A script with its own flags (experiments/classifier.py), not a family.
      continue
    family = families.get(name)
    flag_values = absl_flags.FlagValues()
    experiment_main.define_config_flags(family.Config, family.HELP, flag_values)
    with contextlib.chdir(REPO):  # A flagfile names the flagfiles it builds on from the repository root.
      flag_values(["test", f"--flagfile=experiments/configs/{flagfile}"])
    family.validate(experiment_main.config_from_flags(family.Config, flag_values))


def test_every_flag_has_help_that_says_more_than_its_name_and_a_family_marks_what_it_never_reads():
  from experiments import main as experiment_main
  from gen_jax.families import gmm
  for name in families.FAMILIES:
    family = families.get(name)
    flag_values = absl_flags.FlagValues()
    experiment_main.define_config_flags(family.Config, family.HELP, flag_values)
    for field in dataclasses.fields(family.Config):
      text = flag_values[field.name].help
      assert set(re.findall(r"[a-z0-9]+", text.lower())) - set(field.name.split("_")), (name, field.name, text)
      not_read = text.startswith(config_lib.NOT_READ_HELP)
      assert not_read == (name == "gmm" and field.name in gmm.UNREAD_BY_EM), (name, field.name)


def test_help_lists_the_commands_own_flags_and_exits_0():
  """--help lists the family's settings (not absl's, JAX's, orbax's), leaving out those it never reads, which
  --helpfull marks; a script's --workdir help is the script's. Both exit 0."""
  commands = {"gmm": ["-m", "experiments.gmm", "--help"], "gmm_full": ["-m", "experiments.gmm", "--helpfull"],
              "vae": ["-m", "experiments.vae", "--help"], "evaluate": ["scripts/evaluate.py", "-?"]}
  processes = {name: subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for name, command in commands.items()}
  results = {name: finish(process) for name, process in processes.items()}
  for name, result in results.items():
    assert result.returncode == 0 and result.stderr == "", (name, result.stderr)
  listed = {name: set(re.findall(r"^  --(?:\[no\])?(\w+):", result.stdout, re.MULTILINE))
            for name, result in results.items()}
  gmm_settings = {field.name for field in dataclasses.fields(families.get("gmm").Config)}
  from gen_jax.families import gmm
  assert listed["gmm"] == (gmm_settings - set(gmm.UNREAD_BY_EM)) | {"workdir", "coordinator_address",
                                                                   "num_processes", "process_id"}
  assert "  --num_components: Mixture components K." in results["gmm"].stdout
  assert listed["gmm"] | {"adam_b1", "alsologtostderr"} <= listed["gmm_full"]
  assert "--adam_b1: Not read by this family" in results["gmm_full"].stdout
  assert {"latent_dim", "adam_b1", "grad_clip_norm", "conditional", "workdir"} <= listed["vae"]
  assert "--workdir: Directory for everything the run writes" in results["vae"].stdout
  assert listed["evaluate"] == {"workdir", "iwae_k", "step", "coordinator_address", "num_processes", "process_id"}
  assert "--workdir: The run to evaluate (required): the workdir of a vae, cvae or gmm" in results["evaluate"].stdout
