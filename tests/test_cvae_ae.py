"""The conditional VAE and the autoencoder baseline: their maths, their scores and their label checks.

The flagfile runs of both families (the workdir contract) are in test_figures.py, whose figures are drawn
from those same tiny runs, so each trains once per session.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_one_line_error, assert_user_error, run_experiment
from gen_jax.errors import UserError
from gen_jax import parallel
from gen_jax.models import networks
from gen_jax.families import autoencoder, cvae, latent_code, vae

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 3


def _tiny_config(config_class=vae.VAEConfig, **overrides):
  settings = dict(hidden_sizes=(6,), latent_dim=2, num_epochs=1, batch_size=4) | overrides
  return config_class(**settings)


def _without_label_inputs(cvae_params, vae_shapes):
  """The CVAE's parameters cut to the VAE's shapes: the label's one-hot inputs (appended last to the
  dense inputs, or as the last input channels of the convolution) are dropped."""
  return jax.tree.map(lambda leaf, shape: leaf[tuple(slice(0, size) for size in shape.shape)],
                      cvae_params, vae_shapes)


def _zero_label_weights(cvae_params, vae_shapes):
  """The CVAE's parameters with every weight on a label input set to zero."""
  return jax.tree.map(
      lambda leaf, shape: jnp.pad(leaf[tuple(slice(0, size) for size in shape.shape)],
                                  [(0, full - size) for size, full in zip(shape.shape, leaf.shape)]),
      cvae_params, vae_shapes)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_cvae_elbo_is_the_vae_elbo_when_the_label_weights_are_zero(architecture):
  vae_config = _tiny_config(architecture=architecture)
  cvae_config = dataclasses.replace(vae_config, conditional=True)
  vae_model = latent_code.build_model(vae_config, IMAGE_SHAPE, NUM_CLASSES)
  cvae_model = latent_code.build_model(cvae_config, IMAGE_SHAPE, NUM_CLASSES)
  x = jax.random.bernoulli(jax.random.key(1), 0.4, (5, *IMAGE_SHAPE)).astype(jnp.float32)
  labels = jnp.array([0, 1, 2, 1, 0])
  # Jitted: one compilation each instead of one per operation run eagerly.
  cvae_params = jax.jit(cvae_model.init)(jax.random.key(3), x, jax.random.key(0), labels)["params"]
  vae_shapes = jax.eval_shape(vae_model.init, jax.random.key(2), x, jax.random.key(0))["params"]
  vae_params = _without_label_inputs(cvae_params, vae_shapes)
  ignoring_labels = _zero_label_weights(cvae_params, vae_shapes)
  vae_elbo = jax.jit(lambda params, key: vae.per_example_elbo(vae_model, params, x, key, None, vae_config))
  cvae_elbo = jax.jit(lambda params, key, labels: vae.per_example_elbo(cvae_model, params, x, key, labels,
                                                                        cvae_config))

  key = jax.random.key(4)
  vae_recon, vae_kl = vae_elbo(vae_params, key)
  for shown_labels in (labels, jnp.array([2, 2, 0, 0, 1])):  # The label is ignored: any label, same bound.
    recon, kl = cvae_elbo(ignoring_labels, key, shown_labels)
    np.testing.assert_allclose(recon, vae_recon, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kl, vae_kl, rtol=1e-5, atol=1e-6)
  # With its own (non-zero) label weights the CVAE's bound does depend on the label.
  own = cvae_elbo(cvae_params, key, labels)[0]
  other = cvae_elbo(cvae_params, key, (labels + 1) % NUM_CLASSES)[0]
  assert np.max(np.abs(np.asarray(own - other))) > 1e-3


def test_autoencoder_objective_matches_a_hand_computation():
  config = _tiny_config(autoencoder.AutoencoderConfig, hidden_sizes=(3,), activation="tanh")
  model = latent_code.build_model(config, IMAGE_SHAPE)
  x = jax.random.bernoulli(jax.random.key(5), 0.5, (4, *IMAGE_SHAPE)).astype(jnp.float32)
  params = jax.jit(model.init)(jax.random.key(6), x, jax.random.key(0))["params"]
  p = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params)

  flat = np.asarray(x, np.float64).reshape(4, -1)
  hidden = np.tanh(flat @ p["encoder"]["Dense_0"]["kernel"] + p["encoder"]["Dense_0"]["bias"])
  code = hidden @ p["encoder"][networks.HEAD]["mean_kernel"] + p["encoder"][networks.HEAD]["mean_bias"]  # μ only.
  hidden = np.tanh(code @ p["decoder"]["Dense_0"]["kernel"] + p["decoder"]["Dense_0"]["bias"])
  logits = hidden @ p["decoder"]["Dense_1"]["kernel"] + p["decoder"]["Dense_1"]["bias"]
  by_hand = np.sum(flat * np.log(1 / (1 + np.exp(-logits))) + (1 - flat) * np.log(1 / (1 + np.exp(logits))),
                   axis=1)

  def objective(params):
    recon = autoencoder.reconstruction_log_likelihood(model, params, x, config)
    loss, metrics = autoencoder.autoencoder_loss(recon)
    return loss, (recon, metrics)

  (loss, (recon, metrics)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
  np.testing.assert_allclose(recon, by_hand, rtol=1e-5)
  assert float(loss) == pytest.approx(-by_hand.mean(), rel=1e-5)
  assert set(metrics) == {"recon"} and float(metrics["recon"]) == pytest.approx(by_hand.mean(), rel=1e-5)
  # The code is deterministic: the encoder's log-variance head gets no gradient.
  head_grads = grads["encoder"][networks.HEAD]
  assert np.all(np.asarray(head_grads["log_variance_kernel"]) == 0.0)
  assert np.any(np.asarray(head_grads["mean_kernel"]) != 0.0)


class _AlwaysSays:
  """A stand-in classifier that labels every image `label`."""

  def __init__(self, label):
    self.label = label

  def predict(self, images):
    return np.full(len(images), self.label, np.int32)


def test_conditional_accuracy_counts_per_class():
  config = _tiny_config(cvae.CVAEConfig, conditional_samples_per_class=7, eval_batch_size=3)
  model = latent_code.build_model(config, IMAGE_SHAPE, NUM_CLASSES)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)), jax.random.key(0),
                               jnp.zeros((1,), jnp.int32))["params"]
  codes = latent_code.CodeFunctions(model, config, NUM_CLASSES)
  scores = cvae.make_conditional_accuracy(codes, config, lambda: _AlwaysSays(1), NUM_CLASSES)(params)
  assert scores == {"conditional_accuracy": pytest.approx(1 / 3), "conditional_accuracy_0": 0.0,
                    "conditional_accuracy_1": 1.0, "conditional_accuracy_2": 0.0}


def _npz(tmp_path, name, **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return f"npz:{path}"


def _cvae_task(dataset, tmp_path):
  config = _tiny_config(cvae.CVAEConfig, dataset=dataset, binarization="none", classifier="unused")
  return cvae.make_task(config, str(tmp_path / "run"), parallel.make_mesh())


def test_labels_that_cannot_train_a_cvae_are_one_line_errors(tmp_path):
  images = np.zeros((20, *IMAGE_SHAPE), np.uint8)
  # A test label (3) that the training labels never hold: the decoder could not learn to write it.
  dataset = _npz(tmp_path, "unseen.npz", x=images, y=np.arange(20) % 3, x_test=images[:4],
                 y_test=np.array([0, 1, 2, 3]))
  assert_user_error(lambda: _cvae_task(dataset, tmp_path), "class label(s) 3", "allowed: labels 0..3")
  # A gap in the labels (no class 1).
  dataset = _npz(tmp_path, "gap.npz", x=images, y=np.where(np.arange(20) % 2, 2, 0))
  assert_user_error(lambda: _cvae_task(dataset, tmp_path), "class label(s) 1", "never occur")
  # No labels at all.
  dataset = _npz(tmp_path, "unlabelled.npz", x=images)
  assert_user_error(lambda: _cvae_task(dataset, tmp_path), "needs labels", "unlabelled.npz")
  assert_user_error(lambda: cvae.validate(_tiny_config(cvae.CVAEConfig, conditional=False)),
                    "--conditional=false", "experiments.vae")
  # And the other way: the VAE's experiment does not train a CVAE without the CVAE's checks and scores.
  assert_user_error(lambda: vae.validate(_tiny_config(conditional=True)), "--conditional=true is not allowed in "
                    "experiments.vae", "experiments.cvae")


def test_a_classifier_of_another_dataset_is_refused_before_the_cvae_trains(tmp_path):
  """Same image shape, same classes, other data: its labels of the samples would mean nothing."""
  from gen_jax.evaluation import classifier as classifier_lib
  rng = np.random.default_rng(0)
  labels = np.arange(30) % NUM_CLASSES
  trained_on = _npz(tmp_path, "first.npz", x=rng.integers(0, 256, (30, *IMAGE_SHAPE), dtype=np.uint8), y=labels)
  other = _npz(tmp_path, "other.npz", x=rng.integers(0, 256, (30, *IMAGE_SHAPE), dtype=np.uint8), y=labels)
  # 27: the 30 examples less the 10% held out for test (a source without a test split).
  folder = classifier_lib.load_or_train_classifier(trained_on, num_train_examples=27, num_epochs=1,
                                                   cache_dir=str(tmp_path / "classifiers")).checkpoint_dir
  config = _tiny_config(cvae.CVAEConfig, dataset=other, binarization="none", classifier=folder)
  assert_user_error(lambda: cvae.make_task(config, str(tmp_path / "run"), parallel.make_mesh()),
                    "first.npz'", "allowed: a classifier of", "other.npz'")
  assert not (tmp_path / "run").exists()
  # The same file written another way (relative to the working directory) is the same dataset.
  relative = "npz:" + os.path.relpath(trained_on[len("npz:"):])
  classifier_lib.load_classifier(folder).check_trained_on(relative)


def test_cvae_command_without_labels_ends_in_one_line(tmp_path):
  dataset = _npz(tmp_path, "unlabelled.npz", x=np.zeros((20, 28, 28), np.uint8))
  workdir = tmp_path / "run"
  result = run_experiment("cvae", "--flagfile=experiments/configs/cvae_fashion_mnist.cfg",
                          f"--dataset={dataset}", f"--workdir={workdir}", "--batch_size=4")
  assert_one_line_error(result, "--conditional needs labels", "unlabelled.npz")


def test_autoencoder_command_with_a_bad_size_ends_in_one_line(tmp_path):
  result = run_experiment("autoencoder", "--flagfile=experiments/configs/autoencoder_fashion_mnist.cfg",
                          f"--workdir={tmp_path / 'run'}", "--latent_dim=0")
  assert_one_line_error(result, "--latent_dim=0", "allowed: a positive number")
  assert not (tmp_path / "run").exists()  # Refused before anything was written.


@pytest.mark.parametrize("architecture", ["two_layer", "hvae", "conv_hvae"])
def test_an_autoencoder_refuses_two_stochastic_layers_in_one_line(architecture):
  with pytest.raises(UserError) as error:
    autoencoder.validate(autoencoder.Config(architecture=architecture))
  assert str(error.value) == f"--architecture={architecture} is not an autoencoder's; allowed: mlp, conv"
