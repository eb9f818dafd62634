"""What every family that trains one Linen model by gradient steps on an image dataset shares, whatever the
model: the data (a validation split held out when asked), each epoch's example order, the schedule, the
optimizer and the jitted initial TrainState, evaluators over the test or validation split, model selection
with early stopping, and the loop.Task with its batches formed on the device.

A new image family (an autoregressive model, a flow) composes it with its own model, step and evaluation:

  training = image_training.build(config, mesh, config.num_validation_examples)   # data loaded; nothing written
  model = MyModel(...)                                                # sized by training.data.image_shape
  init_state = training.initial_state(model, lambda: (jnp.zeros((1, *training.data.image_shape)),))
  evaluate = training.split_evaluator(my_sums)      # my_sums(params, x, labels, mask, key) -> {name: masked sum}
  return training.task(init_state=init_state, update=my_step, evaluate=lambda state: evaluate(state.params),
                       selection=training.selection(my_sums, "log_likelihood", config.early_stopping_patience),
                       headline="log_likelihood", on_evaluation=..., finalize=..., operations=...)

`headline` names a metric of the train rows (what `my_step` returns) and of the validation rows. A family
whose Config extends `SelectionConfig` gets the held-out split's flags (`HELP`), and checks them with
`validate_selection`. An unconditional family refuses `labels=` in its operations with
`image_data.checked_labels(labels, count, None)`. The latent-code families (`latent_code.build`) are built on it.
"""

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from flax.training import train_state

from gen_jax import config as config_lib, files, optim, plots, salts
from gen_jax.data import image_data
from gen_jax.errors import UserError
from gen_jax.evaluation import chunked
from gen_jax.runtime import loop

HELP = {
    "num_validation_examples": "The last N training examples become a fixed validation split (0: none).",
    "early_stopping_patience": "Stop once more than this many validation evaluations in a row bring no better "
                               "headline metric (0: never); for a VAE, evaluations before the KL warm-up ends "
                               "do not count.",
}


@dataclasses.dataclass(frozen=True)
class SelectionConfig(config_lib.TrainingConfig):
  """Model selection on a held-out split, for an image family's Config to extend (help: HELP)."""
  # The last N training examples are held out (binarised once, like the test split); validation rows replace
  # the periodic test rows and the best-validation checkpoint is the run's model.
  num_validation_examples: int = 0
  early_stopping_patience: int = 0  # Validation evaluations without improvement before stopping (0: never).


def validate_selection(config):
  """One line for held-out settings that cannot work (a `SelectionConfig`'s)."""
  config_lib.check_non_negative(config, ("num_validation_examples", "early_stopping_patience"))
  if config.num_train_examples and config.num_validation_examples >= config.num_train_examples:
    raise UserError(f"--num_validation_examples={config.num_validation_examples} leaves no training examples of "
                    f"--num_train_examples={config.num_train_examples}; allowed: fewer than "
                    f"{config.num_train_examples}")
  if config.early_stopping_patience and not config.num_validation_examples:
    raise UserError(f"--early_stopping_patience={config.early_stopping_patience} needs a validation split; "
                    "allowed: with --num_validation_examples > 0, or --early_stopping_patience=0")


@dataclasses.dataclass(frozen=True)
class ImageTraining:
  """The model-independent parts of an image family's task (see the module docstring)."""
  config: Any
  mesh: Any
  data: image_data.ImageData
  schedule: loop.Schedule
  step_inputs: Any
  optimizer: Any
  with_labels: bool  # Batches and evaluation chunks carry the class labels (a conditional model).

  def initial_state(self, model, example_inputs):
    """init_state(key): `model`'s TrainState under the config's optimizer, one compiled program (run eagerly,
    every layer's ops would be dispatched, and compiled, one by one). `example_inputs()` -> the arguments of
    `model.init` after the key, a batch of one, built inside the trace."""
    optimizer = self.optimizer

    @jax.jit
    def init_state(key):
      params = model.init(key, *example_inputs())["params"]
      return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optimizer)

    return init_state

  def split_evaluator(self, sums_fn, split="test"):
    """evaluate(params) -> {name: mean over the test (or validation) split} of `sums_fn(params, x, labels,
    mask, key)`'s masked sums, in chunks of --eval_batch_size, with keys from the run's seed and the split's salt."""
    images, labels, salt = {
        "test": (self.data.test_images, self.data.test_labels, salts.EVALUATION),
        "validation": (self.data.validation_images, self.data.validation_labels, salts.VALIDATION),
    }[split]
    if images is None:  # A family's mistake, not a user's: it asked for a split it did not hold out.
      raise ValueError(f"this run holds out no {split} split (build it with num_validation_examples > 0)")
    key = salts.key_for(self.config.seed, salt)
    return chunked.make_split_evaluator(sums_fn, images, labels if self.with_labels else None,
                                        self.config.eval_batch_size, self.mesh, key)

  def selection(self, validation_sums, metric, patience=0, start_step=0, derived=None):
    """Model selection by `metric` of the validation rows (and early stopping after `patience` evaluations
    without a better one, counted from `start_step`); None without a held-out split. A row holds the split
    means of `validation_sums` and what `derived(means)` adds to them (bits per dimension, say)."""
    if self.data.validation_images is None:
      return None
    evaluate = self.split_evaluator(validation_sums, "validation")

    def validate(state):
      means = evaluate(state.params)
      return means | (derived(means) if derived else {})

    return loop.Selection(validate=validate, metric=metric, patience=patience, start_step=start_step)

  def task(self, **fields):
    """The loop.Task from the family's own `fields` (init_state, update, evaluate, headline, figures,
    operations, selection ...) and this training's data, batches, example order and schedule."""
    return loop.Task(make_batch=image_data.make_batch_fn(self.config.binarization, with_labels=self.with_labels),
                     data=self.data.device_data(with_labels=self.with_labels), step_inputs=self.step_inputs,
                     schedule=self.schedule, dataset=self.data, **fields)


def save_samples_and_curve(workdir, samples, metric, label):
  """The end of a run's outputs: samples.npy (the run's final samples in data space) and the curve of the
  headline `metric` over the run, as images/<metric>_curve.png."""
  files.save_npy(os.path.join(workdir, "samples.npy"), np.asarray(samples, np.float32))
  plots.plot_curves([workdir], os.path.join(workdir, "images", f"{metric}_curve.png"), metric=metric,
                    labels=[label])


def build(config, mesh, num_validation_examples=0, labels_needed_by=None):
  """The data, example order, schedule and optimizer of `config`; writes nothing. `labels_needed_by`: the
  setting that makes the model conditional ("--conditional"), named in the one line a dataset without
  labels gets; None: an unconditional model, whose batches carry no labels."""
  data = image_data.load_image_data(config, num_validation_examples)
  with_labels = labels_needed_by is not None
  if with_labels:
    image_data.require_labels(data, config.dataset, labels_needed_by)
  step_inputs, steps_per_epoch = loop.epoch_permutation_indices(len(data.train_images), config.batch_size,
                                                                config.seed)
  schedule = loop.Schedule.from_config(config, steps_per_epoch)
  optimizer = optim.make_optimizer(config, schedule.num_steps, steps_per_epoch=steps_per_epoch)
  return ImageTraining(config=config, mesh=mesh, data=data, schedule=schedule, step_inputs=step_inputs,
                       optimizer=optimizer, with_labels=with_labels)
