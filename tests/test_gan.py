"""Tests of the GAN family: the losses against their formulas, the penalties against finite differences,
the alternating step's freezing and D:G counting, the mode-coverage scorer, divergence, and the flagfiles.

Networks are tiny (hidden layers of 8) and each jitted function compiles once per test.
"""

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import objectives
from gen_jax.data import clusters, image_data, toys
from gen_jax.errors import UserError
from gen_jax.evaluation import classifier as classifier_lib, mode_coverage
from gen_jax import parallel
from gen_jax.families import gan, gan_evaluation, gan_seeds, gan_steps
from gen_jax.models import gan as gan_models
from gen_jax.runtime import loop, run as run_lib
from conftest import (CHANGING_GRADIENTS, TINY_DCGAN_FLAGS, assert_one_line_error, finish, load_script, numpy_adam,
                      start_experiment)

# Outputs spanning confident rejection, indecision and confident acceptance.
REAL_OUTPUTS = jnp.array([-3.0, -0.5, 0.0, 0.7, 4.0])
FAKE_OUTPUTS = jnp.array([-5.0, -1.0, 0.2, 1.5, 2.0])


def _log_sigmoid(x):
  return np.log(1.0 / (1.0 + np.exp(-np.asarray(x, np.float64))))


def _formulas(loss, real, fake):
  """(d_loss_real, d_loss_fake, g_loss) written directly from the papers' definitions, in float64 numpy."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if loss in ("minimax", "non_saturating"):
    d_real, d_fake = -np.mean(_log_sigmoid(real)), -np.mean(np.log(1.0 - 1.0 / (1.0 + np.exp(-fake))))
    if loss == "minimax":
      g = np.mean(np.log(1.0 - 1.0 / (1.0 + np.exp(-fake))))
    else:
      g = -np.mean(_log_sigmoid(fake))
    return d_real, d_fake, g
  if loss == "hinge":
    return np.mean(np.maximum(0, 1 - real)), np.mean(np.maximum(0, 1 + fake)), -np.mean(fake)
  if loss == "least_squares":
    return np.mean(0.5 * (real - 1)**2), np.mean(0.5 * fake**2), np.mean(0.5 * (fake - 1)**2)
  if loss == "wasserstein":
    return -np.mean(real), np.mean(fake), -np.mean(fake)
  raise AssertionError(loss)


@pytest.mark.parametrize("loss", objectives.GAN_LOSSES)
def test_losses_match_their_formulas(loss):
  d_loss, d_metrics = objectives.discriminator_loss(loss, REAL_OUTPUTS, FAKE_OUTPUTS)
  g_loss, g_metrics = objectives.generator_loss(loss, FAKE_OUTPUTS)
  d_real, d_fake, g = _formulas(loss, REAL_OUTPUTS, FAKE_OUTPUTS)
  np.testing.assert_allclose(d_metrics["d_loss_real"], d_real, rtol=1e-5)
  np.testing.assert_allclose(d_metrics["d_loss_fake"], d_fake, rtol=1e-5)
  np.testing.assert_allclose(d_loss, d_real + d_fake, rtol=1e-5)
  np.testing.assert_allclose(d_metrics["d_loss"], d_loss)
  np.testing.assert_allclose(g_loss, g, rtol=1e-5)
  np.testing.assert_allclose(g_metrics["g_loss"], g_loss)
  probability = loss in ("minimax", "non_saturating")
  expected_real = np.mean(1 / (1 + np.exp(-np.asarray(REAL_OUTPUTS)))) if probability else np.mean(REAL_OUTPUTS)
  np.testing.assert_allclose(d_metrics["d_real"], expected_real, rtol=1e-5)
  expected_fake = np.mean(1 / (1 + np.exp(-np.asarray(FAKE_OUTPUTS)))) if probability else np.mean(FAKE_OUTPUTS)
  np.testing.assert_allclose(d_metrics["d_fake"], expected_fake, rtol=1e-5)


def test_the_optimal_discriminator_scores_half_at_equilibrium():
  """With p_g = p_data, D* = ½ and the minimax D loss is 2 log 2 (Goodfellow et al., Theorem 1)."""
  d_loss, metrics = objectives.discriminator_loss("minimax", jnp.zeros(4), jnp.zeros(4))
  np.testing.assert_allclose(d_loss, 2 * np.log(2), rtol=1e-6)
  assert float(metrics["d_real"]) == float(metrics["d_fake"]) == 0.5


def test_saturating_generator_gradient_vanishes_where_non_saturating_does_not():
  """D confidently rejects the fakes (logit −20, D(G(z)) ≈ 2e-9): the minimax G loss gives no signal."""
  rejected = jnp.full((4,), -20.0)
  saturating = jax.grad(lambda o: objectives.generator_loss("minimax", o)[0])(rejected)
  non_saturating = jax.grad(lambda o: objectives.generator_loss("non_saturating", o)[0])(rejected)
  assert np.all(np.abs(saturating) < 1e-8)  # −σ(−20)/4
  np.testing.assert_allclose(non_saturating, -0.25, rtol=1e-6)  # −(1 − σ(−20))/4
  # Both push the same way where D is undecided (logit 0): −½ per example, over 4 examples.
  undecided = jnp.zeros(4)
  for loss in ("minimax", "non_saturating"):
    np.testing.assert_allclose(jax.grad(lambda o, l=loss: objectives.generator_loss(l, o)[0])(undecided), -0.125)


def _smooth_critic(x):
  """A fixed nonlinear critic of 3-D inputs, one output per example."""
  weights = jnp.array([[0.7, -1.2, 0.4], [0.3, 0.9, -0.8]])
  return jnp.sum(jnp.tanh(x.reshape(x.shape[0], -1) @ weights.T + 0.1) * jnp.array([1.5, -2.0]), axis=-1)


def _finite_difference_gradients(critic, x, step=1e-3):
  x = np.asarray(x, np.float64)
  gradients = np.zeros_like(x)
  for index in np.ndindex(*x.shape[1:]):
    shift = np.zeros_like(x)
    shift[(slice(None),) + index] = step
    plus = np.asarray(critic(jnp.asarray(x + shift, jnp.float32)), np.float64)
    minus = np.asarray(critic(jnp.asarray(x - shift, jnp.float32)), np.float64)
    gradients[(slice(None),) + index] = (plus - minus) / (2 * step)
  return gradients.reshape(len(x), -1)


def test_gradient_penalty_and_r1_match_finite_differences():
  real = jax.random.normal(jax.random.key(1), (6, 3))
  fake = jax.random.normal(jax.random.key(2), (6, 3)) + 1.0
  key = jax.random.key(3)
  penalty = objectives.gradient_penalty(_smooth_critic, real, fake, key)
  epsilon = jax.random.uniform(key, (6, 1))  # The same draw the penalty makes.
  interpolates = epsilon * real + (1 - epsilon) * fake
  norms = np.linalg.norm(_finite_difference_gradients(_smooth_critic, interpolates), axis=1)
  np.testing.assert_allclose(penalty, (norms - 1.0)**2, rtol=2e-3, atol=1e-5)
  r1 = objectives.r1_penalty(_smooth_critic, real)
  np.testing.assert_allclose(r1, np.sum(_finite_difference_gradients(_smooth_critic, real)**2, axis=1),
                             rtol=2e-3)


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
  """D(x) = w·x with ‖w‖ = 1 has ‖∇D‖ = 1 everywhere: the 1-Lipschitz optimum the penalty asks for."""
  unit = jnp.array([0.6, 0.8, 0.0])
  x = jax.random.normal(jax.random.key(0), (5, 3))
  penalty = objectives.gradient_penalty(lambda v: v @ unit, x, -x, jax.random.key(1))
  np.testing.assert_allclose(penalty, 0.0, atol=1e-6)


def test_mode_coverage_on_hand_made_point_sets():
  grid = toys.load_toy("grid")
  perfect = mode_coverage.score(np.repeat(grid.means, 4, axis=0), grid.means, grid.std)
  assert perfect == {"modes": 25, "high_quality": 1.0, "reverse_kl": 0.0}
  collapsed = mode_coverage.score(np.repeat(grid.means[:1], 10, axis=0), grid.means, grid.std)
  assert collapsed["modes"] == 1
  np.testing.assert_allclose(collapsed["reverse_kl"], np.log(25))
  # Two modes, 3 points in one and 1 in the other; plus points at 2.9 and 3.1 std (one in, one out).
  points = np.concatenate([np.repeat(grid.means[:1], 3, 0), grid.means[1:2],
                           grid.means[2:3] + [2.9 * grid.std, 0.0], grid.means[3:4] + [0.0, 3.1 * grid.std]])
  scores = mode_coverage.score(points, grid.means, grid.std)
  assert scores["modes"] == 3 and scores["high_quality"] == 5 / 6
  shares = np.array([3, 1, 1]) / 5
  np.testing.assert_allclose(scores["reverse_kl"], np.sum(shares * np.log(shares * 25)))
  nowhere = mode_coverage.score(np.full((5, 2), 1.0), grid.means, grid.std)  # Between modes, > 3 std away.
  assert nowhere["modes"] == 0 and nowhere["high_quality"] == 0.0 and np.isnan(nowhere["reverse_kl"])


def test_toy_samplers_follow_the_protocol():
  ring = toys.load_toy("ring")
  points = np.asarray(ring.sample(jax.random.key(0), 4000))
  np.testing.assert_allclose(np.linalg.norm(ring.means, axis=1), 1.0)
  scores = mode_coverage.score(points, ring.means, ring.std)
  assert scores["modes"] == 8 and scores["high_quality"] > 0.98 and scores["reverse_kl"] < 0.01
  assert toys.load_toy("grid").num_modes == 25
  mixture = toys.load_toy("mixture_1d")
  x = np.linspace(-8, 8, 4001)[:, None]
  np.testing.assert_allclose(np.sum(mixture.density(x)) * (x[1, 0] - x[0, 0]), 1.0, rtol=1e-4)


def _tiny_config(**overrides):
  values = dict(dataset="ring", num_steps=4, batch_size=8, latent_dim=2, g_hidden_sizes=(8, 8),
                d_hidden_sizes=(8, 8), g_normalization="batch", spectral_norm=True, packing=2,
                learning_rate=1e-2, num_eval_samples=50, num_samples=20, log_every_steps=2, eval_every_steps=4,
                checkpoint_every_steps=4, steps_per_dispatch=2)
  return gan.GANConfig(**(values | overrides))


def _assert_trees_identical(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) and leaves_a
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_trees_differ(a, b):
  assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _network_part(state, name):
  """Everything of one network: parameters, collections, and its own optimizer's state."""
  opt_state = state.d_opt_state if name == "discriminator" else state.g_opt_state
  return (state.params[name], state.model_state[name], opt_state)


def test_each_step_leaves_the_other_network_bit_identical_and_steps_are_counted(tmp_path):
  config = _tiny_config(d_steps_per_g_step=3)
  task = gan.make_task(config, str(tmp_path), parallel.make_mesh())
  networks = gan_steps.build_networks(config, (2,))
  d_tx, g_tx = gan_steps.make_optimizers(config, config.num_steps, gan.TOY_STEPS_PER_EPOCH)
  state = task.init_state(jax.random.key(0))
  # Both networks have non-parameter state here: spectral-norm vectors in D, batch-norm averages in G.
  assert jax.tree.leaves(state.model_state["discriminator"]) and jax.tree.leaves(state.model_state["generator"])
  batch = {"x": toys.load_toy("ring").sample(jax.random.key(1), 3 * config.batch_size).reshape(3, 8, 2)}

  one_d_step = jax.jit(lambda s: gan_steps.discriminator_step(s, {"x": batch["x"][0]}, jax.random.key(2), networks,
                                                       config, d_tx))
  after_d, _ = one_d_step(state)
  _assert_trees_identical(_network_part(after_d, "generator"), _network_part(state, "generator"))
  _assert_trees_identical(after_d.ema_generator, state.ema_generator)
  _assert_trees_differ(after_d.params["discriminator"], state.params["discriminator"])
  _assert_trees_differ(after_d.d_opt_state, state.d_opt_state)
  _assert_trees_differ(after_d.model_state["discriminator"], state.model_state["discriminator"])

  after_g, _ = jax.jit(lambda s: gan_steps.generator_step(s, jax.random.key(3), networks, config, g_tx, 8))(after_d)
  _assert_trees_identical(_network_part(after_g, "discriminator"), _network_part(after_d, "discriminator"))
  _assert_trees_differ(after_g.params["generator"], after_d.params["generator"])
  _assert_trees_differ(after_g.g_opt_state, after_d.g_opt_state)
  # The EMA moves by (1 − decay) towards G's new weights, and it is what evaluation uses.
  jax.tree.map(lambda ema, old, new: np.testing.assert_allclose(
      np.asarray(ema), config.ema_decay * np.asarray(old) + (1 - config.ema_decay) * np.asarray(new), rtol=1e-6,
      atol=1e-7), after_g.ema_generator, after_d.ema_generator, after_g.params["generator"])
  assert gan_steps.evaluation_generator(after_g, config) is after_g.ema_generator
  raw = dataclasses.replace(config, ema_decay=0.0)
  assert gan_steps.evaluation_generator(after_g, raw) is after_g.params["generator"]

  # The fused step: --d_steps_per_g_step=3 D updates, then one G update, per loop step.
  update = jax.jit(task.update)
  for step in range(2):
    state, metrics = update(state, batch, jax.random.key(10 + step))
  assert (int(state.step), int(state.d_steps), int(state.g_steps)) == (2, 6, 2)
  assert {"d_loss", "d_loss_real", "d_loss_fake", "g_loss", "d_real", "d_fake", "loss"} <= set(metrics)
  # Adam's own step counters agree: D's optimizer counted 6 updates, G's 2.
  counts = [int(leaf) for leaf in jax.tree.leaves(state.d_opt_state) if np.ndim(leaf) == 0]
  assert counts and set(counts) == {6}
  counts = [int(leaf) for leaf in jax.tree.leaves(state.g_opt_state) if np.ndim(leaf) == 0]
  assert counts and set(counts) == {2}


def test_a_huge_learning_rate_stops_with_the_step_and_the_loss_named(tmp_path):
  config = _tiny_config(learning_rate=1e30, loss="least_squares", spectral_norm=False, g_normalization="none",
                        packing=1, num_steps=8, log_every_steps=8, eval_every_steps=8, checkpoint_every_steps=8)
  with pytest.raises(loop.TrainingDiverged, match=r"became (nan|inf|-inf) at step \d+"):
    run_lib.train_and_evaluate(gan, config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints" / "8")  # The diverged state is never saved.


@pytest.mark.parametrize("overrides, message", [
    (dict(packing=3, batch_size=128), "--batch_size=128 is not a multiple of --packing=3"),
    (dict(loss="wgan"), "--loss='wgan' is unknown; allowed: minimax, non_saturating"),
    (dict(d_normalization="batch", gradient_penalty_weight=10.0), "--d_normalization='batch' with a gradient"),
    (dict(architecture="dcgan"), "--architecture=dcgan on the toy --dataset=ring; allowed: mlp"),
    (dict(ema_decay=1.0), "--ema_decay=1.0 is not allowed; allowed: 0 <= value < 1"),
    (dict(dataset="fashion_mnist", conditioning="projection", packing=1),
     "--conditioning=projection without --conditional has no labels to project"),
    (dict(dataset="fashion_mnist", conditional=True, conditioning="projection", packing=1, g_normalization="none"),
     "--conditioning=projection with --g_normalization=none gives G no label"),
    (dict(dataset="fashion_mnist", conditional=True, conditioning="projection"),
     "--conditioning=projection with --packing=2: a pack has several labels"),
    (dict(dataset="fashion_mnist", conditioning="film"),
     "--conditioning='film' is unknown; allowed: concat, projection"),
    (dict(dataset="fashion_mnist", condition_on="clusters"),
     "--condition_on=clusters without --conditional trains an unconditional GAN"),
    (dict(dataset="fashion_mnist", conditional=True, condition_on="kmeans"),
     "--condition_on='kmeans' is unknown; allowed: classes, clusters"),
    (dict(dataset="fashion_mnist", conditional=True, condition_on="clusters", num_clusters=0),
     "--num_clusters=0"),
    (dict(base_features=32), "--architecture=mlp does not read --base_features=32; allowed: --base_features=64 "
     "(the defaults) with this architecture"),
    (dict(dataset="fashion_mnist", architecture="dcgan", d_activation="elu"),
     "--architecture=dcgan does not read --g_hidden_sizes=8,8 --d_hidden_sizes=8,8 --d_activation=elu; allowed: "
     "--g_hidden_sizes=256,256,256, --d_hidden_sizes=256,256,256, --d_activation=leaky_relu"),
    (dict(dataset="fashion_mnist", num_clusters=20), "--condition_on=classes does not read --num_clusters=20"),
    (dict(optimizer="sgd", d_adam_b1=0.5), "--optimizer=sgd does not read --d_adam_b1=0.5"),
    (dict(num_images=8, num_train_examples=100), "--dataset=ring does not read --num_train_examples=100 "
     "--num_images=8; allowed: --num_train_examples=0, --num_images=64 (the defaults) with this dataset"),
    (dict(dataset="fashion_mnist", binarization="dynamic"), "--binarization=dynamic is not supported by the GAN"),
    (dict(dataset="fashion_mnist", conditional_samples_per_class=10),
     "--conditional=False does not read --conditional_samples_per_class=10"),
    (dict(eval_batch_size=100), "the GAN does not read --eval_batch_size=100"),
])
def test_bad_settings_are_one_line_user_errors(overrides, message):
  with pytest.raises(UserError) as info:
    gan.validate(_tiny_config(**overrides))
  assert message in str(info.value) and "\n" not in str(info.value)


def test_more_clusters_than_training_images_is_a_one_line_error():
  images = np.zeros((5, 4, 4, 1), np.uint8)
  dataset = image_data.ImageData(images, None, images, None, None)
  config = _tiny_config(dataset="images:/data", conditional=True, condition_on="clusters", num_clusters=6)
  with pytest.raises(UserError) as info:
    gan.image_labels(config, dataset)
  assert "--num_clusters=6 exceeds the 5 training images of --dataset=images:/data; allowed: at most 5" == str(
      info.value)


def test_kmeans_ends_at_a_lloyd_fixed_point_below_where_it_started():
  """Each point in the cluster of its nearest centroid (brute force), each centroid the mean of its points, a
  smaller within-cluster sum of squares than the starting centroids', the same clusters from the same seed."""
  points = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
  assignments, centroids = clusters.kmeans(points, 4, seed=5)
  squared = ((points[:, None].astype(np.float64) - centroids[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(assignments, squared.argmin(1))
  for cluster in range(4):
    np.testing.assert_allclose(centroids[cluster], points[assignments == cluster].mean(0), atol=1e-5)
  start = points[np.random.default_rng(5).choice(200, 4, replace=False)]
  assert squared.min(1).sum() < 0.9 * ((points[:, None] - start[None]) ** 2).sum(-1).min(1).sum()
  np.testing.assert_array_equal(clusters.kmeans(points, 4, seed=5)[0], assignments)
  np.testing.assert_array_equal(clusters.shares(assignments, 4), np.bincount(assignments, minlength=4) / 200)


def test_labels_with_shares_are_drawn_and_spread_by_their_shares():
  """Self-conditioning's labels: the generator step's draws follow the shares (not a softmax of them); the
  default sample labels hold each label's share of the count by largest remainders, spread so every chunk
  holds them in proportion; equal shares give the classes in turn."""
  for count in (25, 30, 1000):
    np.testing.assert_array_equal(gan_steps.spread_labels(count, [0.1] * 10), gan_steps.cycled_labels(count, 10))
  np.testing.assert_array_equal(np.bincount(gan_steps.spread_labels(10, [1 / 3] * 3)), [4, 3, 3])
  shares = (0.5, 0.3, 0.15, 0.05)
  labels = np.asarray(gan_steps.default_labels(1000, 4, shares))
  np.testing.assert_array_equal(np.bincount(labels), [500, 300, 150, 50])
  for chunk in labels.reshape(10, 100):
    assert np.all(np.abs(np.bincount(chunk, minlength=4) - 100 * np.array(shares)) <= 1)
  networks = gan_steps.Networks(None, None, 2, 4, shares)
  drawn = np.asarray(gan_steps.draw_labels(jax.random.key(0), 40000, networks))
  np.testing.assert_allclose(np.bincount(drawn, minlength=4) / 40000, shares, atol=0.01)


def test_the_projection_discriminator_adds_the_label_embedding_inner_product():
  """D(x, y) = ψ(φ(x)) + ⟨e_y, φ(x)⟩: linear in the embedding table E, through row y alone, with ∂D/∂E[y] = φ(x),
  the same features whatever the label."""
  discriminator = gan_models.MLPDiscriminator((8, 8), num_classes=3, conditioning="projection")
  x, labels = jax.random.normal(jax.random.key(0), (4, 5)), jnp.array([0, 1, 2, 1])
  params = discriminator.init(jax.random.key(1), x, labels)["params"]
  table = params["class_projection"]["kernel"]  # Row y is e_y.
  assert table.shape == (3, 8)

  def outputs(embedding, labels):
    return discriminator.apply({"params": params | {"class_projection": {"kernel": embedding}}}, x, labels)

  features = jax.jacobian(lambda e: outputs(e, labels))(table)  # (example, class, feature)
  for example, label in enumerate(labels.tolist()):
    assert np.all(np.delete(np.asarray(features[example]), label, axis=0) == 0)  # Only row y is used.
  phi = features[np.arange(4), labels]
  np.testing.assert_allclose(outputs(table, labels), outputs(jnp.zeros_like(table), labels)
                             + jnp.sum(table[labels] * phi, -1), rtol=1e-5, atol=1e-6)
  phi_other = jax.jacobian(lambda e: outputs(e, (labels + 1) % 3))(table)[np.arange(4), (labels + 1) % 3]
  np.testing.assert_allclose(phi_other, phi, rtol=1e-6)  # φ(x) does not depend on the label.


def test_class_conditional_batch_norm_is_the_closed_form():
  h = jax.random.normal(jax.random.key(0), (6, 2, 2, 3)) * 3.0 + 1.0
  labels = jnp.array([0, 1, 0, 1, 1, 0])
  module = gan_models.ConditionalBatchNorm(num_classes=2)
  variables = module.init(jax.random.key(1), h, labels)
  scale = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
  shift = jnp.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]])
  params = {"scale": {"embedding": scale}, "shift": {"embedding": shift}}
  out, _ = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, h, labels,
                        mutable=["batch_stats"])
  h64 = np.asarray(h, np.float64)
  normalized = (h64 - h64.mean((0, 1, 2))) / np.sqrt(h64.var((0, 1, 2)) + 1e-5)  # Flax's default epsilon.
  expected = normalized * np.asarray(scale)[labels][:, None, None] + np.asarray(shift)[labels][:, None, None]
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_conditional_accuracy_is_the_mean_of_per_class_agreement():
  intended = np.array([0, 1, 2, 0, 1, 2, 0, 1])
  predicted = np.array([0, 1, 1, 2, 1, 2, 0, 0])
  scores = classifier_lib.conditional_accuracy(predicted, intended, 3)
  assert scores == {"conditional_accuracy": pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3),
                    "conditional_accuracy_0": pytest.approx(2 / 3), "conditional_accuracy_1": pytest.approx(2 / 3),
                    "conditional_accuracy_2": 0.5}


def test_the_conditional_gan_scores_mixed_class_samples_per_class(tmp_path, monkeypatch):
  """conditional_accuracy of a projection GAN: conditional_samples_per_class samples of every class, drawn in
  mixed-class chunks, judged per class by the classifier (here a stand-in that answers 0 for everything)."""
  config = _tiny_config(dataset="fashion_mnist", conditional=True, conditioning="projection", packing=1,
                        conditional_samples_per_class=7)
  networks = gan_steps.build_networks(config, (4, 4, 1), num_classes=3)
  d_tx, g_tx = gan_steps.make_optimizers(config, config.num_steps, 10)
  state = gan_steps.init_state(jax.random.key(0), networks, (4, 4, 1), d_tx, g_tx, 1)
  judged = []

  class SaysZero:
    def predict(self, images):
      judged.append(np.asarray(images))
      return np.zeros(len(images), np.int64)

  monkeypatch.setattr(classifier_lib, "load_or_train_classifier", lambda *args, **kwargs: SaysZero())
  evaluation = gan_evaluation.ImageEvaluation(networks, config, str(tmp_path), config.num_steps, labelled=True)
  scores = evaluation._conditional_accuracy(state)
  assert scores == {"conditional_accuracy": pytest.approx(1 / 3), "conditional_accuracy_0": 1.0,
                    "conditional_accuracy_1": 0.0, "conditional_accuracy_2": 0.0}
  assert len(judged) == 1 and judged[0].shape == (21, 4, 4, 1) and 0 <= judged[0].min() <= judged[0].max() <= 1


# One short run of each flagfile: it parses, trains, evaluates and writes the workdir contract. The six
# runs are independent, so they start together (one JAX start-up's wait instead of six).
SHORT_RUN = ["--num_steps=2", "--log_every_steps=1", "--eval_every_steps=2", "--checkpoint_every_steps=2",
             "--steps_per_dispatch=1", "--num_samples=40", "--num_eval_samples=40", "--d_steps_per_g_step=2"]
FLAGFILE_RUNS = {
    "gan_1d": SHORT_RUN,
    "gan_ring": SHORT_RUN,
    "gan_grid": SHORT_RUN,
    "dcgan_fashion_mnist": [*SHORT_RUN, *TINY_DCGAN_FLAGS],
    "cgan_fashion_mnist": [*SHORT_RUN, *TINY_DCGAN_FLAGS],
    "dcgan_self_conditioned_fashion_mnist": [*SHORT_RUN, *TINY_DCGAN_FLAGS, "--num_clusters=5"],
}


def _check_workdir(name, workdir):
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert {row["split"] for row in rows} == {"train", "test"}
  train_rows = [row for row in rows if row["split"] == "train"]
  assert [row["step"] for row in train_rows] == [1, 2]
  flags = dict(line.strip().split("=", 1) for line in open(workdir / "flags.txt") if "=" in line)
  batch_size = int(flags["--batch_size"])
  assert train_rows[-1]["examples_seen"] == 2 * 2 * batch_size  # Real examples the discriminator consumed.
  for key in ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "d_real", "d_fake"):
    assert np.isfinite(train_rows[-1][key])
  samples = np.load(workdir / "samples.npy")
  assert len(samples) == 40 and np.all(np.isfinite(samples))
  assert os.listdir(workdir / "checkpoints")
  images = {os.path.basename(path) for path in glob.glob(str(workdir / "images" / "*"))}
  if name.endswith("fashion_mnist"):
    assert samples.shape == (40, 28, 28, 1) and samples.min() >= 0 and samples.max() <= 1
    assert {"samples_00000002.png", "interpolation_00000002.png"} <= images
    assert ("style_grid_00000002.png" in images) == (name != "dcgan_fashion_mnist")
    return
  assert {"modes", "high_quality", "reverse_kl"} <= set(rows[-1])
  if name == "gan_1d":
    assert {"frame_00000002.png", "training.gif"} <= images
    assert "d_mean_abs_deviation_from_half" in rows[-1]
  else:
    assert {"scatter_00000002.png", "training.gif"} <= images


@pytest.fixture(scope="module")
def flagfile_runs(tmp_path_factory):
  """The short run of each flagfile, started together; (their parent folder, name -> CompletedProcess)."""
  root = tmp_path_factory.mktemp("flagfiles")
  processes = {name: start_experiment("gan", f"--flagfile=experiments/configs/{name}.cfg",
                                      f"--workdir={root / name}", *flags)
               for name, flags in FLAGFILE_RUNS.items()}
  return root, {name: finish(process, timeout=300) for name, process in processes.items()}


def test_every_flagfile_on_a_short_run(flagfile_runs):
  root, results = flagfile_runs
  for name, result in results.items():
    assert result.returncode == 0, (name, result.stderr[-2000:])
    _check_workdir(name, root / name)


def test_gan_tradeoffs_script_refuses_what_it_cannot_sample(flagfile_runs, repo):
  """scripts/gan_tradeoffs.py: a toy GAN's run, a truncation outside (0, 1] and a seed past 2³¹ − 1 (jax would
  fold it onto a smaller one) get one line, exit 2."""
  root, _ = flagfile_runs
  script = os.path.join(repo, "scripts", "gan_tradeoffs.py")
  dcgan = f"--workdir={root / 'dcgan_fashion_mnist'}"
  for flags, fragments in [((f"--workdir={root / 'gan_ring'}",), ("--workdir=", "--architecture=dcgan")),
                           ((dcgan, "--truncation=0"), ("--truncation=0",)),
                           ((dcgan, "--seed=4294967296"), ("--seed=4294967296", "below 2147483648"))]:
    result = subprocess.run([sys.executable, script, *flags], cwd=repo, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2


def test_mode_coverage_script_runs_each_variant_once_and_writes_the_table(flagfile_runs, tmp_path, repo):
  """The table script on two short variants: packing 1 is the ring flagfile's own setting, so it is not run
  again, nor is a finished run; every run there is a row with its seed count."""
  # The ring flagfile's short run above is this script's `flagfile` run of seed 0 (same flags, seed 0): it is
  # finished, so the script leaves it as it is. Its other runs reuse that run's compiled programs (the
  # compilation cache), and one at a time, seed 1's runs find seed 0's.
  finished = tmp_path / "ring" / "flagfile" / "seed0"
  shutil.copytree(flagfile_runs[0] / "gan_ring", finished)
  finished_metrics = (finished / "metrics.jsonl").read_text()
  env = dict(os.environ, SEEDS="0 1", DATASETS="ring", VARIANTS="flagfile packing1 hinge", JOBS="1",
             EXTRA_FLAGS=" ".join(SHORT_RUN), PYTHON=sys.executable)
  result = subprocess.run(["bash", "scripts/reproduce_mode_coverage.sh", str(tmp_path), str(tmp_path / "t.md")],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "== ring flagfile seed 0" not in result.stdout and "== ring flagfile seed 1" in result.stdout
  assert (finished / "metrics.jsonl").read_text() == finished_metrics and not (finished / "log.txt").exists()
  assert sorted(os.listdir(tmp_path / "ring")) == ["flagfile", "hinge"]
  table = (tmp_path / "t.md").read_text()
  rows = [line for line in table.splitlines() if "(measured)" in line]
  assert [row.split("|")[2].strip() for row in rows] == ["flagfile (measured)", "hinge (measured)"]
  assert all(" of 2 |" in row for row in rows)
  assert "PacGAN2 (PacGAN paper)" in table
  # A run refused for bad input is listed as failed and its workdir is not made; the script ends in an error.
  env.update(VARIANTS="minimax", SEEDS="0", EXTRA_FLAGS="--num_steps=-1")
  refused = subprocess.run(["bash", "scripts/reproduce_mode_coverage.sh", str(tmp_path), str(tmp_path / "t.md")],
                           cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert refused.returncode == 1 and "1 run(s) failed" in refused.stderr, refused.stderr[-2000:]
  assert "ring minimax seed0: exit status 2" in (tmp_path / "logs" / "failed.txt").read_text()
  assert sorted(os.listdir(tmp_path / "ring")) == ["flagfile", "hinge"]


def test_vmapped_seeds_follow_each_seeds_own_run(tmp_path):
  """gan_seeds trains seeds together; seed 1's state must be the loop's run of seed 1 (to rounding)."""
  config = _tiny_config(g_normalization="none", spectral_norm=False)
  reported = []
  states, scores = gan_seeds.train_toy_seeds(config, [0, 1], lambda step, s: reported.append(step))
  assert reported == [4] and len(scores) == 2 and {"modes", "high_quality", "reverse_kl"} <= set(scores[1])

  task = gan.make_task(config, str(tmp_path), parallel.make_mesh())
  init_key, train_key = jax.random.split(jax.random.key(1))
  single, _ = loop.compile_steps(task, train_key)(task.init_state(init_key), None, np.arange(config.num_steps))
  seed_one = jax.tree.map(lambda leaf: leaf[1], states)
  for x, y in zip(jax.tree.leaves(seed_one.params), jax.tree.leaves(single.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
  # The seeds are different runs.
  _assert_trees_differ(jax.tree.map(lambda leaf: leaf[0], states).params, seed_one.params)


def test_gan_tradeoffs_sampling_keeps_batch_statistics_and_the_best_ranked():
  """gan_tradeoffs.py's two samplers, with stand-in networks. Truncation: a generator that standardises its
  batch (as batch norm does) still shows ψ's shrinkage, because each chunk shares its batch with untruncated
  codes; without them it would re-normalise it away. Ranking: exactly the best-scored of count/keep draws,
  and for a conditional GAN the best of each class, every class keeping its share."""
  tradeoffs = load_script("gan_tradeoffs")
  standardise = jax.jit(lambda z, labels: (z - z.mean(0)) / z.std(0))
  key, count, dim = jax.random.key(3), 500, 4
  spreads = {psi: np.std(tradeoffs.truncated_samples(standardise, key, psi, count, dim)) for psi in (1.0, 0.5)}
  # ψ·ε with ε ~ N(0, 1) truncated to [−2, 2] has std ψ·0.880.
  np.testing.assert_allclose(spreads[0.5] / spreads[1.0], 0.5 * 0.880, rtol=0.1)
  alone = np.std(np.concatenate([standardise(chunk, None) for chunk in np.split(
      0.5 * np.asarray(jax.random.truncated_normal(key, -2, 2, (count, dim))), count // tradeoffs.CHUNK)]))
  assert alone > 0.95  # What the reference batch prevents.
  # Untruncated codes pass through in order: the identity generator returns N(0, I) codes of the same key.
  identity = lambda z, labels: z
  codes = tradeoffs.truncated_samples(identity, key, 1.0, count, dim)
  np.testing.assert_array_equal(codes, jax.random.normal(jax.random.split(key)[0], (count, dim)))
  # A conditional generator gets each code's cycled label, and the reference codes' own.
  given = []

  def label_echo(z, labels):
    given.append(np.asarray(labels))
    return np.repeat(np.asarray(labels, np.float32)[:, None], dim, axis=1)

  echoed = tradeoffs.truncated_samples(label_echo, key, 0.5, count, dim, num_classes=3)
  np.testing.assert_array_equal(echoed[:, 0], np.arange(count) % 3)
  reference_labels = np.arange(tradeoffs.REFERENCE) % 3
  assert given and all(np.array_equal(labels[tradeoffs.CHUNK:], reference_labels) for labels in given)

  score = lambda x, labels: x[:, 0]
  kept = tradeoffs.ranked_samples(identity, score, key, 0.25, count, dim)
  drawn = np.asarray(jax.random.normal(key, (4 * count, dim)))
  assert kept.shape == (count, dim)
  threshold = np.sort(drawn[:, 0])[-count]
  assert set(map(tuple, kept)) == {tuple(row) for row in drawn if row[0] >= threshold}
  # Two classes whose draws D scores apart (class 1 higher): ranked together, class 1 would fill every slot.
  biased = lambda x, labels: x[:, 0] + 100.0 * np.asarray(labels)
  kept = tradeoffs.ranked_samples(identity, biased, key, 0.25, count, dim, num_classes=2)
  for label in (0, 1):
    of_class = drawn[label::2]
    best = np.sort(of_class[:, 0])[-(count // 2):]
    np.testing.assert_array_equal(np.sort(kept[label::2, 0]), best)


def test_resolution_levels_and_packs_of_consecutive_examples():
  # The docstring's cases, and sides the halving stops at.
  assert {side: gan_models.num_resolution_levels(side) for side in (28, 32, 64, 16, 8, 7)} == {
      28: 2, 32: 2, 64: 3, 16: 1, 8: 0, 7: 0}
  # PacGAN: D judges m consecutive examples as one input, so a packed D is the unpacked D on the packs laid
  # end to end, with the same parameters.
  x = jax.random.normal(jax.random.key(0), (6, 3))
  packed = gan_models.MLPDiscriminator((5,), packing=2)
  params = packed.init(jax.random.key(1), x)
  np.testing.assert_allclose(packed.apply(params, x),
                             gan_models.MLPDiscriminator((5,)).apply(params, x.reshape(3, 6)), rtol=1e-6)
  assert packed.apply(params, x).shape == (3,)  # One output per pack.


def test_the_discriminator_steps_at_its_own_learning_rate(tmp_path):
  """--d_learning_rate: Adam's first step moves each of D's parameters by the rate (its update is
  lr·g/(|g| + ε), bias-corrected), here 3e-3 against G's 1e-2."""
  config = _tiny_config(d_learning_rate=3e-3)
  task = gan.make_task(config, str(tmp_path), parallel.make_mesh())
  networks = gan_steps.build_networks(config, (2,))
  d_tx, _ = gan_steps.make_optimizers(config, config.num_steps, gan.TOY_STEPS_PER_EPOCH)
  state = task.init_state(jax.random.key(0))
  real = toys.load_toy("ring").sample(jax.random.key(1), config.batch_size)
  after, _ = jax.jit(lambda s: gan_steps.discriminator_step(s, {"x": real}, jax.random.key(2), networks, config,
                                                           d_tx))(state)
  moves = np.concatenate([np.abs(np.asarray(new) - np.asarray(old)).ravel() for new, old in zip(
      jax.tree.leaves(after.params["discriminator"]), jax.tree.leaves(state.params["discriminator"]))])
  assert moves.max() == pytest.approx(3e-3, rel=1e-3) and np.median(moves) == pytest.approx(3e-3, rel=1e-2)


def test_each_network_steps_with_its_own_adam_betas():
  """--d_adam_b1/--d_adam_b2 reach D's Adam and --adam_b1/--adam_b2 G's: three steps of gradients that change
  sign and scale, against Adam's Algorithm 1 in float64 with each network's betas (rtol as in test_families'
  optimizer test: optax's bias corrections are float32)."""
  config = _tiny_config(adam_b1=0.5, adam_b2=0.99, d_adam_b1=0.0, d_adam_b2=0.9, learning_rate=0.1)
  d_tx, g_tx = gan_steps.make_optimizers(config, config.num_steps, gan.TOY_STEPS_PER_EPOCH)
  params = {"discriminator": jnp.zeros(3), "generator": jnp.zeros(3)}
  for tx, network, frozen, (b1, b2) in [(d_tx, "discriminator", "generator", (0.0, 0.9)),
                                        (g_tx, "generator", "discriminator", (0.5, 0.99))]:
    state, moved = tx.init(params), []
    for g in CHANGING_GRADIENTS:
      update, state = tx.update({name: jnp.asarray(g, jnp.float32) for name in params}, state, params)
      moved.append(np.asarray(update[network]))
      assert not np.any(np.asarray(update[frozen]))
    np.testing.assert_allclose(moved, numpy_adam(CHANGING_GRADIENTS, 0.1, b1, b2, config.adam_eps), rtol=1e-4,
                               err_msg=network)


def test_the_discriminators_schedule_runs_over_its_own_update_count():
  """With 5 D steps per G step and a cosine schedule over 4 loop steps, D's rate decays over its 20 updates
  (half the peak once 10 are done) and G's over its 4 (half once 2 are done). Adam's step on a constant gradient is
  the rate itself."""
  config = _tiny_config(lr_schedule="cosine", d_steps_per_g_step=5, learning_rate=0.1)
  d_tx, g_tx = gan_steps.make_optimizers(config, config.num_steps, gan.TOY_STEPS_PER_EPOCH)
  params = {"discriminator": jnp.zeros(2), "generator": jnp.zeros(2)}
  gradients = {name: jnp.ones(2) for name in params}
  for tx, network, half_way in [(d_tx, "discriminator", 10), (g_tx, "generator", 2)]:
    state = tx.init(params)
    for _ in range(half_way):
      _, state = tx.update(gradients, state, params)
    update, _ = tx.update(gradients, state, params)
    np.testing.assert_allclose(np.asarray(update[network]), -0.05, rtol=1e-4, err_msg=network)


def test_the_wgan_gp_step_weighs_the_penalty_of_the_packs_it_judges(tmp_path):
  """With --loss=wasserstein --gradient_penalty_weight=10 and packing 2, D's loss is the critic's plus 10 times
  the mean penalty (‖∇D(x̂)‖ − 1)² over the packs, x̂ = εx + (1 − ε)x̃ with one ε per pack; recomputed here from
  the step's own fakes and key. Without spectral norm or batch norm D's statistics do not move within the step,
  so the D before it is the one its loss judges."""
  config = _tiny_config(loss="wasserstein", gradient_penalty_weight=10.0, spectral_norm=False)
  task = gan.make_task(config, str(tmp_path), parallel.make_mesh())
  networks = gan_steps.build_networks(config, (2,))
  d_tx, _ = gan_steps.make_optimizers(config, config.num_steps, gan.TOY_STEPS_PER_EPOCH)
  state = task.init_state(jax.random.key(0))
  real = toys.load_toy("ring").sample(jax.random.key(1), config.batch_size)
  key = jax.random.key(2)
  _, metrics = jax.jit(lambda s: gan_steps.discriminator_step(s, {"x": real}, key, networks, config, d_tx))(state)
  z_key, penalty_key = jax.random.split(key)  # As the step splits it.
  z = jax.random.normal(z_key, (config.batch_size, networks.latent_dim), jnp.float32)
  fake, _ = gan_steps.generate(networks, state.params["generator"], state.model_state["generator"], z, None)
  packs = lambda x: x.reshape(-1, config.packing, *x.shape[1:])
  epsilon = np.asarray(jax.random.uniform(penalty_key, (config.batch_size // config.packing, 1, 1)))
  interpolates = epsilon * np.asarray(packs(real)) + (1 - epsilon) * np.asarray(packs(fake))
  critic = lambda packed: gan_steps.discriminate(networks, state.params["discriminator"],
                                                 state.model_state["discriminator"],
                                                 packed.reshape(-1, *packed.shape[2:]))[0]
  gradients = np.asarray(jax.grad(lambda x: jnp.sum(critic(x)))(jnp.asarray(interpolates)))
  expected = np.mean((np.sqrt(np.sum(gradients.reshape(len(gradients), -1)**2, axis=-1)) - 1)**2)
  assert float(metrics["gradient_penalty"]) == pytest.approx(expected, rel=1e-4)
  assert float(metrics["loss"]) == pytest.approx(float(metrics["d_loss"]) + 10 * expected, rel=1e-5)


def test_the_r1_penalty_differentiates_the_discriminator_the_loss_judges(tmp_path):
  """With spectral norm, D's step first advances the power-iteration vectors on the real batch; the penalty
  must be taken through that same D, as the loss is, not through the one before the step."""
  config = _tiny_config(r1_weight=1.0)
  task = gan.make_task(config, str(tmp_path), parallel.make_mesh())
  networks = gan_steps.build_networks(config, (2,))
  d_tx, _ = gan_steps.make_optimizers(config, config.num_steps, gan.TOY_STEPS_PER_EPOCH)
  state = task.init_state(jax.random.key(0))
  real = toys.load_toy("ring").sample(jax.random.key(1), config.batch_size)
  after, metrics = jax.jit(lambda s: gan_steps.discriminator_step(s, {"x": real}, jax.random.key(2), networks,
                                                                  config, d_tx))(state)

  @jax.jit
  def r1_through(d_state):
    critic = lambda packed: gan_steps.discriminate(networks, state.params["discriminator"], d_state,
                                                   packed.reshape(-1, *packed.shape[2:]))[0]
    return jnp.mean(objectives.r1_penalty(critic, real.reshape(-1, config.packing, *real.shape[1:])))

  updated, before = (float(r1_through(after.model_state["discriminator"])),
                     float(r1_through(state.model_state["discriminator"])))
  assert float(metrics["r1_penalty"]) == pytest.approx(updated, rel=1e-5)
  assert abs(updated - before) > 1e-3 * updated  # The two Ds differ enough for the test to tell them apart.
  # It enters the loss as γ/2 · E‖∇D(real)‖² (Mescheder et al. 2018).
  assert float(metrics["loss"]) == pytest.approx(
      float(metrics["d_loss"]) + 0.5 * config.r1_weight * float(metrics["r1_penalty"]), rel=1e-5)
