"""The density-table pieces against maths: the VampPrior's log-density and KL, the gradient normaliser, the
two-level HVAE's log-weights and its bound against brute-force integration, gated layers, the KL warm-up in
epochs, the validation split and early stopping with the best checkpoint, and their bad input."""

import dataclasses
import functools
import json
import math
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import gen_jax
from gen_jax import objectives, optim, parallel
from gen_jax.data import image_data
from gen_jax.errors import UserError
from gen_jax.families import latent_code, vae
from gen_jax.models import networks, priors
from gen_jax.runtime import checkpointing, loop

from conftest import untimed_rows
from test_loop import _CountingTask


def _normal_log_density(z, mean, log_variance):
  """log N(z; mean, diag exp(log_variance)) in float64 numpy, one dimension at a time."""
  return float(np.sum(-0.5 * (math.log(2 * math.pi) + log_variance + (z - mean)**2 / np.exp(log_variance))))


def _mixture_log_density(points, means, log_variances):
  """log (1/K) Σ_k N(z; mean_k, diag exp(log_variance_k)) for each point, by brute force in float64."""
  means, log_variances = np.asarray(means, np.float64), np.asarray(log_variances, np.float64)
  return [np.logaddexp.reduce([_normal_log_density(np.asarray(point, np.float64), m, v)
                               for m, v in zip(means, log_variances)]) - math.log(len(means)) for point in points]


def _vampprior_log_density(z, components):
  """The VampPrior's log p(z) from its components (the q(z | u_k)); the density needs nothing else."""
  return priors.VampPrior(pseudo_inputs=None).log_density(z, components)


def test_vampprior_log_density_is_the_brute_force_mixture_density():
  rng = np.random.default_rng(0)
  means, log_variances = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) - 1.0
  z = rng.normal(size=(4, 3)) * 2.0
  expected = _mixture_log_density(z, means, log_variances)
  got = _vampprior_log_density(jnp.asarray(z, jnp.float32), (jnp.asarray(means, jnp.float32),
                                                             jnp.asarray(log_variances, jnp.float32)))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
  # Far from the origin the expanded squares cancel terms of ~900 in float32; the centring on the means'
  # average keeps the error where it was (without it this case is off by 1e-4 relative).
  far = _vampprior_log_density(jnp.asarray(z + 30.0, jnp.float32), (jnp.asarray(means + 30.0, jnp.float32),
                                                                   jnp.asarray(log_variances, jnp.float32)))
  np.testing.assert_allclose(np.asarray(far), expected, rtol=1e-5)
  # Leading sample axes broadcast: (k, batch, d) codes give (k, batch) densities.
  assert _vampprior_log_density(jnp.zeros((2, 4, 3)), (jnp.asarray(means), jnp.asarray(log_variances))).shape == (2, 4)


def test_vampprior_through_the_model_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
  config = vae.Config(hidden_sizes=(8,), latent_dim=2, hidden_layer="gated", prior="vampprior", num_pseudo_inputs=3,
                      pseudo_input_init_mean=0.5, pseudo_input_init_std=0.3, log_variance_clamp=(-6.0, 2.0))
  model = latent_code.build_model(config, (2, 2, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)), jax.random.key(1))["params"]
  pseudo_inputs = np.clip(np.asarray(params["pseudo_inputs"]["pseudo_inputs"]), 0.0, 1.0)
  assert pseudo_inputs.shape == (3, 2, 2, 1) and 0 < pseudo_inputs.mean() < 1
  means, log_variances = model.apply({"params": params}, jnp.asarray(pseudo_inputs), method="encode")
  z = jnp.asarray([[0.3, -0.2], [2.0, 1.0]])
  components = model.apply({"params": params}, method="prior_statistics")
  expected = _mixture_log_density(z, means, log_variances)
  log_prior = model.apply({"params": params}, z, components, method="log_prior")
  np.testing.assert_allclose(np.asarray(log_prior), expected, rtol=1e-5)


def test_pseudo_inputs_start_at_their_mean_and_spread_and_get_no_gradient_outside_zero_to_one():
  """The parameter is N(init_mean, init_std²) (here mean 0.3, std 0.05 over 2,000 entries, within four
  standard errors), the pseudo-inputs are it clipped to [0, 1], and an entry outside [0, 1] gets no gradient
  (the reference's hardtanh): why the density flagfiles' N(0, 0.0632²) start leaves about half the pixels dark."""
  module = priors.PseudoInputs(count=500, image_shape=(2, 2, 1), init_mean=0.3, init_std=0.05)
  raw = np.asarray(module.init(jax.random.key(0))["params"]["pseudo_inputs"], np.float64)
  assert raw.shape == (500, 2, 2, 1)
  assert abs(raw.mean() - 0.3) < 4 * 0.05 / math.sqrt(raw.size)
  assert abs(raw.std() - 0.05) < 4 * 0.05 / math.sqrt(2 * raw.size)  # The standard error of a sample's std.
  params = {"pseudo_inputs": jnp.asarray([[[[-0.2], [0.4]], [[1.3], [0.9]]]])}
  one = priors.PseudoInputs(count=1, image_shape=(2, 2, 1))
  np.testing.assert_allclose(np.asarray(one.apply({"params": params})).ravel(), [0.0, 0.4, 1.0, 0.9], rtol=1e-6)
  gradient = jax.grad(lambda p: jnp.sum(one.apply({"params": p})))(params)
  np.testing.assert_array_equal(np.asarray(gradient["pseudo_inputs"]).ravel(), [0.0, 1.0, 0.0, 1.0])


def test_one_component_vampprior_at_the_standard_normal_gives_the_closed_form_kl():
  """K = 1 and q(z | u_1) = N(0, I): log p(z) is N(0, I)'s to the last bit, so the Monte-Carlo KL is an
  unbiased estimate of the closed form; with 200,000 samples it is within four standard errors."""
  mean, log_variance = jnp.asarray([[0.7, -1.2, 0.1]]), jnp.asarray([[-0.5, 0.4, -2.0]])
  z = objectives.reparameterize(jax.random.key(0), mean, log_variance, num_samples=200_000)  # (k, 1, 3)
  components = (jnp.zeros((1, 3)), jnp.zeros((1, 3)))
  log_prior = _vampprior_log_density(z, components)
  np.testing.assert_allclose(np.asarray(log_prior), np.asarray(objectives.standard_normal_log_density(z)), atol=2e-5)
  log_posterior = objectives.gaussian_log_density(z, mean, log_variance)
  per_sample = np.asarray(log_posterior - log_prior)[:, 0]
  estimate = vae.PRIORS["vampprior"].kl(None, log_prior, log_posterior)
  closed = float(vae.PRIORS["standard_normal"].kl((mean, log_variance, None), None, None)[0])
  assert float(estimate[0]) == pytest.approx(per_sample.mean(), rel=1e-5)
  assert abs(per_sample.mean() - closed) < 4 * per_sample.std() / math.sqrt(len(per_sample))


def test_monte_carlo_kl_under_the_standard_normal_is_the_drawn_codes_log_ratio():
  """--monte_carlo_kl: the KL of N(0, I) as the reference code trains on it, log q(z|x) − log N(z; 0, I) at the
  very z the reconstruction term uses; without it, the closed form ½ Σ (σ² + μ² − 1 − log σ²)."""
  config = vae.Config(hidden_sizes=(8,), latent_dim=2, log_variance_clamp=(-6.0, 2.0))
  model = latent_code.build_model(config, (2, 2, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)), jax.random.key(1))["params"]
  x = jnp.asarray([[[[1.0], [0.0]], [[1.0], [1.0]]], [[[0.0], [0.0]], [[1.0], [0.0]]]])
  mean, log_variance = (np.asarray(a, np.float64) for a in model.apply({"params": params}, x, method="encode"))
  z = np.asarray(objectives.reparameterize(jax.random.key(2), jnp.asarray(mean, jnp.float32),
                                           jnp.asarray(log_variance, jnp.float32), num_samples=1))[0]
  drawn = [_normal_log_density(z[i], mean[i], log_variance[i]) - _normal_log_density(z[i], 0.0, 0.0) for i in range(2)]
  closed = 0.5 * np.sum(np.exp(log_variance) + mean**2 - 1.0 - log_variance, axis=-1)
  assert abs(drawn[0] - closed[0]) > 1e-3  # The two estimates differ for this draw, so the check below can fail.
  for monte_carlo, expected in ((True, drawn), (False, closed)):
    _, _, kl = vae.per_example_terms(model, params, x, jax.random.key(2), None,
                                     dataclasses.replace(config, monte_carlo_kl=monte_carlo))
    np.testing.assert_allclose(np.asarray(kl), expected, rtol=1e-5, atol=1e-6)


class _LearnedGaussian(nn.Module):
  """p(z) = N(μ, diag σ²) with μ and log σ² learned: a prior written here as a researcher would add one."""
  dim: int

  @nn.compact
  def statistics(self, posterior_of):
    del posterior_of  # Not built from the encoder.
    return (self.param("prior_mean", nn.initializers.constant(0.5), (self.dim,)),
            self.param("prior_log_variance", nn.initializers.constant(-1.0), (self.dim,)))

  def log_density(self, z, statistics):
    return objectives.gaussian_log_density(z, *statistics)

  def sample(self, key, count, dim, statistics):
    del dim
    return objectives.reparameterize(key, *statistics, num_samples=count)


def test_a_new_prior_is_its_module_and_one_entry_of_the_table(monkeypatch):
  """The extension contract of `models.priors`: with one PRIORS entry the flag accepts the prior, the other
  priors' settings are refused under it, its parameters are the model's, and the bounds and the sampler use
  its density."""
  monkeypatch.setitem(vae.PRIORS, "learned_gaussian", vae.Prior(
      "N(mu, diag sigma^2), learned", build=lambda config, image_shape: _LearnedGaussian(config.latent_dim),
      kl=vae.PRIORS["vampprior"].kl))
  config = vae.Config(hidden_sizes=(8,), latent_dim=2, prior="learned_gaussian")
  vae.validate(config)
  with pytest.raises(UserError, match=r"^--prior=learned_gaussian does not read --num_pseudo_inputs=3;"):
    vae.validate(dataclasses.replace(config, num_pseudo_inputs=3))
  model = latent_code.build_model(config, (2, 2, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)), jax.random.key(1))["params"]
  assert params["prior_mean"].tolist() == [0.5, 0.5] and params["prior_log_variance"].tolist() == [-1.0, -1.0]
  z = jnp.asarray([[0.3, -0.2], [2.0, 1.0]])
  statistics = model.apply({"params": params}, method="prior_statistics")
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, z, statistics, method="log_prior")),
                             [_normal_log_density(np.asarray(point), 0.5, -1.0) for point in z], rtol=1e-6)
  # The ELBO's KL is its Monte-Carlo estimate under this prior: log q(z|x) − log p(z) at the drawn z.
  x = jnp.asarray([[[[1.0], [0.0]], [[1.0], [1.0]]]])
  encode, log_weight_terms, _, kl = vae.latent_variable_functions(model, config)
  encoded = encode(params, x, None)
  _, log_prior, log_posterior = log_weight_terms(params, encoded, x, None, jax.random.key(2), 1)
  z_drawn = objectives.reparameterize(jax.random.key(2), *encoded[:2], num_samples=1)
  np.testing.assert_allclose(np.asarray(log_prior)[0, 0],
                             _normal_log_density(np.asarray(z_drawn)[0, 0], 0.5, -1.0), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(kl(encoded, log_prior, log_posterior)),
                             np.asarray(log_posterior - log_prior)[0])
  draws = latent_code.CodeFunctions(model, config, None).prior_draws(params, jax.random.key(3), 20_000)
  standard_error = math.exp(-0.5) / math.sqrt(len(draws))
  assert draws.shape == (20_000, 2) and np.all(np.abs(draws.mean(axis=0) - 0.5) < 4 * standard_error)
  np.testing.assert_allclose(draws.var(axis=0), math.exp(-1.0), rtol=0.05)


def test_mixture_sampler_draws_each_component_with_its_own_spread():
  means = jnp.asarray([[-10.0], [10.0]])
  draws = np.asarray(objectives.sample_mixture(jax.random.key(0), means, jnp.log(jnp.asarray([[0.01], [4.0]])),
                                               20_000))[:, 0]
  left, right = draws[draws < 0], draws[draws > 0]
  assert abs(len(left) / len(draws) - 0.5) < 0.02
  assert left.std() == pytest.approx(0.1, rel=0.05) and right.std() == pytest.approx(2.0, rel=0.05)


def test_gradient_normaliser_hands_adam_unit_norm_gradients():
  grads = {"w": jnp.asarray([[3.0, 4.0], [0.0, 12.0]]), "b": jnp.asarray([1e-3, -2e-3]), "zero": jnp.zeros(3)}
  normalised, _ = optim.normalize_each_parameter().update(grads, optax.EmptyState())
  assert float(jnp.linalg.norm(normalised["w"])) == pytest.approx(1.0, abs=1e-6)
  assert float(jnp.linalg.norm(normalised["b"])) == pytest.approx(1.0, abs=1e-4)  # 1e-7 of slack on a 2e-3 norm.
  np.testing.assert_array_equal(np.asarray(normalised["zero"]), 0.0)
  config = vae.Config(optimizer="adam_norm_grad", learning_rate=0.1)
  chained = optim.make_optimizer(config, total_steps=10)
  params = jax.tree.map(jnp.ones_like, grads)
  updates, _ = chained.update(grads, chained.init(params), params)
  adam = optax.adam(0.1)
  expected, _ = adam.update(normalised, adam.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6), updates, expected)
  # A weight decay joins after the normalisation, as in the reference's AdamNormGrad. With the parameters at -1
  # and a decay of 0.5, Adam's first steps differ in sign from those of the other order on two of w's entries.
  decayed = optim.make_optimizer(dataclasses.replace(config, weight_decay=0.5), total_steps=10)
  params = jax.tree.map(lambda leaf: -jnp.ones_like(leaf), grads)
  state, adam_state = decayed.init(params), adam.init(params)
  for _ in range(2):
    updates, state = decayed.update(grads, state, params)
    expected, adam_state = adam.update(jax.tree.map(lambda g, p: g + 0.5 * p, normalised, params), adam_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5), updates, expected)


def test_gated_dense_is_the_product_of_a_linear_map_and_a_sigmoid_gate():
  layer = networks.GatedDense(3)
  x = jax.random.normal(jax.random.key(0), (4, 5))
  params = layer.init(jax.random.key(1), x)["params"]
  assert set(params) == {"linear_kernel", "gate_kernel", "linear_bias", "gate_bias"}
  p = {name: np.asarray(value, np.float64) for name, value in params.items()}
  x64 = np.asarray(x, np.float64)
  expected = (x64 @ p["linear_kernel"] + p["linear_bias"]) / (1 + np.exp(-(x64 @ p["gate_kernel"] + p["gate_bias"])))
  np.testing.assert_allclose(np.asarray(layer.apply({"params": params}, x)), expected, rtol=1e-5, atol=1e-6)


def test_he_normal_init_has_the_variance_two_over_fan_in():
  kernel = networks.WEIGHT_INITS["he_normal"](jax.random.key(0), (400, 300))
  assert float(jnp.std(kernel)) == pytest.approx(math.sqrt(2 / 400), rel=0.02)
  assert float(jnp.max(jnp.abs(kernel))) > 2.5 * math.sqrt(2 / 400)  # Not truncated at two standard deviations.


def test_kl_warmup_in_epochs_follows_the_reference_beta_equals_epoch_over_warmup():
  weights = [float(objectives.kl_weight_schedule(jnp.asarray(step), warmup_epochs=4, steps_per_epoch=10))
             for step in (0, 9, 10, 29, 30, 39, 40, 1000)]
  assert weights == [0.25, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]


def _tiny_hvae(prior, architecture="hvae", image_shape=(2, 2, 1), latent_dim=1):
  config = vae.Config(architecture=architecture, hidden_sizes=(6, 6), latent_dim=latent_dim,
                      top_latent_dim=latent_dim, hidden_layer="gated", weight_init="he_normal",
                      log_variance_clamp=(-6.0, 2.0), prior=prior, num_pseudo_inputs=2, pseudo_input_init_mean=0.5,
                      pseudo_input_init_std=0.3)
  model = latent_code.build_model(config, image_shape)
  params = model.init(jax.random.key(3), jnp.zeros((1, *image_shape)), jax.random.key(4))["params"]
  return config, model, params


def _bernoulli_log_likelihood(logits, x):
  return np.sum(x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits), axis=-1)


@pytest.mark.parametrize("architecture", ["hvae", "conv_hvae"])
def test_hvae_log_weights_are_the_direct_sum_of_its_five_densities_per_image_and_sample(architecture):
  """Two images, three samples each: every log-weight against the sum of its five densities, each computed
  from that image and that sample alone, so a reshape or broadcast that mixed one image's samples with
  another's (in q(z1|x,z2)'s once-per-image features, say) would show."""
  config, model, params = _tiny_hvae("standard_normal", architecture, image_shape=(28, 28, 1), latent_dim=2)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 28, 28, 1)), jnp.float32)
  key = jax.random.key(7)
  log_weights, _, _ = vae.per_example_terms(model, params, x, key, None, config, num_samples=3)
  # One compiled program per method and shape (op by op, the ConvHVAE's convolutions would take seconds).
  jitted = {method: jax.jit(functools.partial(model.apply, method=method))
            for method in ("encode_image", "bottom_posterior", "bottom_prior_stats", "decode_both")}
  apply = lambda method, *args: jax.tree.map(np.asarray, jitted[method]({"params": params}, *args))
  # The draws log_weight_terms makes: z2 from q(z2|x) with the first key, z1 from q(z1|x,z2) with the second.
  top_key, bottom_key = jax.random.split(key)
  (top_mean, top_log_variance), features = apply("encode_image", x)
  z2 = np.asarray(objectives.reparameterize(top_key, top_mean, top_log_variance, num_samples=3))
  z1 = np.asarray(objectives.reparameterize(bottom_key, *apply("bottom_posterior", features, z2)))
  for b in range(2):
    (image_top_mean, image_top_log_variance), image_features = apply("encode_image", x[b:b + 1])
    for i in range(3):
      one_z1, one_z2 = z1[i, b][None], z2[i, b][None]  # (1, d): sample i of image b
      bottom_mean, bottom_log_variance = apply("bottom_posterior", image_features, one_z2)
      prior_mean, prior_log_variance = apply("bottom_prior_stats", one_z2)
      logits = apply("decode_both", one_z1, one_z2).reshape(-1)
      direct = (_bernoulli_log_likelihood(logits, np.asarray(x[b]).reshape(-1))
                + _normal_log_density(one_z2[0], 0.0, 0.0)
                + _normal_log_density(one_z1[0], prior_mean[0], prior_log_variance[0])
                - _normal_log_density(one_z2[0], image_top_mean[0], image_top_log_variance[0])
                - _normal_log_density(one_z1[0], bottom_mean[0], bottom_log_variance[0]))
      assert float(log_weights[i, b]) == pytest.approx(direct, abs=1e-3), (i, b)


def test_hvae_posterior_means_are_each_images_own_and_in_layer_order():
  """The codes active units are counted on: E_q[z1|x], the mean over z2 ~ q(z2|x) of q(z1|x,z2)'s mean, then
  E_q[z2|x]. With q(z1|x,z2)'s z2 branch zeroed q(z1|x,z2) is q(z1|x), so the average is its mean exactly: an
  average over the images instead of the samples, or the layers swapped, would show on three different images."""
  config, model, params = _tiny_hvae("standard_normal", latent_dim=2)
  branch = params["bottom_encoder"]["GatedDense_0"]  # z2 -> the features' width, before the concatenation.
  silent = branch | {"linear_kernel": jnp.zeros_like(branch["linear_kernel"]),
                     "linear_bias": jnp.zeros_like(branch["linear_bias"])}
  params = params | {"bottom_encoder": params["bottom_encoder"] | {"GatedDense_0": silent}}
  x = jnp.asarray([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]).reshape(3, 2, 2, 1)
  model_fns = vae.likelihood_model(model, config)
  z1_means, z2_means = model_fns.posterior_means(params, model_fns.encode(params, x, None), jax.random.key(0))
  (top_mean, _), features = model.apply({"params": params}, x, method="encode_image")
  bottom_mean, _ = model.apply({"params": params}, features, jnp.zeros((3, 2)), method="bottom_posterior")
  assert np.ptp(np.asarray(bottom_mean), axis=0).min() > 1e-3 and np.ptp(np.asarray(top_mean), axis=0).min() > 1e-3
  np.testing.assert_allclose(np.asarray(z1_means), np.asarray(bottom_mean), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(z2_means), np.asarray(top_mean), rtol=1e-6)


def test_the_hvae_vampprior_is_the_mixture_of_the_top_encoders_posteriors_at_the_pseudo_inputs():
  """p(z2) of the HVAE with the VampPrior, heads as initialised: (1/K) Σ_k q(z2 | u_k) with q(z2 | ·) the top
  encoder and u_k the pseudo-input parameters clipped to [0, 1], in float64."""
  _, model, params = _tiny_hvae("vampprior", image_shape=(4, 4, 1), latent_dim=2)
  raw = np.asarray(params["pseudo_inputs"]["pseudo_inputs"])
  assert np.any((raw < 0) | (raw > 1))  # Some entries need the clip.
  means, log_variances = model.apply({"params": params}, jnp.asarray(np.clip(raw, 0.0, 1.0)), method="encode")
  assert np.ptp(np.asarray(means), axis=0).min() > 1e-3  # Two distinct components, not one repeated.
  z2 = jnp.asarray([[0.3, -0.2], [1.5, 0.7], [-2.0, 0.1]])
  expected = _mixture_log_density(z2, means, log_variances)
  statistics = model.apply({"params": params}, method="prior_statistics")
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, z2, statistics, method="log_prior")),
                             expected, rtol=1e-5, atol=1e-6)


# The reference's layers (sajadn/Exemplar-VAE models/HVAE_2level.py and convHVAE_2level.py, with AbsHModel.py's
# forward pass) at the density flagfiles' sizes, per part of the model: ("gated", in, out) is a GatedDense,
# ("linear", in, out) a Linear (the mean and log-variance heads are one each), ("gated_conv", in, out, kernel)
# a GatedConv2d, ("conv", in, out, kernel) a Conv2d; every one with biases.
_REFERENCE_HVAE = {
    "top_encoder": [("gated", 784, 300), ("gated", 300, 300), ("linear", 300, 40), ("linear", 300, 40)],
    "bottom_encoder": [("gated", 784, 300), ("gated", 40, 300), ("gated", 600, 300), ("linear", 300, 40),
                       ("linear", 300, 40)],
    "bottom_prior": [("gated", 40, 300), ("gated", 300, 300), ("linear", 300, 40), ("linear", 300, 40)],
    "decoder": [("gated", 40, 300), ("gated", 40, 300), ("gated", 600, 300), ("linear", 300, 784)],
}
_REFERENCE_CONV_HVAE = {
    "top_encoder": [("gated_conv", 1, 32, 7), ("gated_conv", 32, 32, 3), ("gated_conv", 32, 64, 5),
                    ("gated_conv", 64, 64, 3), ("gated_conv", 64, 6, 3), ("linear", 294, 40), ("linear", 294, 40)],
    "bottom_encoder": [("gated_conv", 1, 32, 3), ("gated_conv", 32, 32, 3), ("gated_conv", 32, 64, 3),
                       ("gated_conv", 64, 64, 3), ("gated_conv", 64, 6, 3), ("gated", 40, 294), ("gated", 588, 300),
                       ("linear", 300, 40), ("linear", 300, 40)],
    "bottom_prior": _REFERENCE_HVAE["bottom_prior"],
    "decoder": [("gated", 40, 300), ("gated", 40, 300), ("gated", 600, 784), ("gated_conv", 1, 64, 3)]
               + [("gated_conv", 64, 64, 3)] * 3 + [("conv", 64, 1, 1)],
}
# Parameter tensors per layer: the gradient normaliser scales each tensor by its own norm, so the model must have
# the reference's tensors, not only its parameter count (one fused mean-and-log-variance layer would pass that).
_REFERENCE_TENSORS = {"linear": 2, "gated": 4, "conv": 2, "gated_conv": 4}
_REFERENCE_PARAMETER_COUNTS = {
    "linear": lambda fan_in, fan_out: fan_in * fan_out + fan_out,
    "gated": lambda fan_in, fan_out: 2 * (fan_in * fan_out + fan_out),
    "conv": lambda fan_in, fan_out, kernel: fan_in * fan_out * kernel**2 + fan_out,
    "gated_conv": lambda fan_in, fan_out, kernel: 2 * (fan_in * fan_out * kernel**2 + fan_out),
}


@pytest.mark.parametrize("architecture, reference", [("hvae", _REFERENCE_HVAE), ("conv_hvae", _REFERENCE_CONV_HVAE)])
def test_hvae_and_conv_hvae_have_the_reference_layers(architecture, reference):
  """Parameter counts and tensor counts per part at the flagfiles' sizes (shapes only, nothing compiled): a
  layer too many or too few, or one of another width, changes the counts of its part."""
  config = vae.Config(architecture=architecture, hidden_sizes=(300, 300), latent_dim=40, top_latent_dim=40,
                      hidden_layer="gated", weight_init="he_normal", log_variance_clamp=(-6.0, 2.0))
  model = latent_code.build_model(config, (28, 28, 1))
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jax.random.key(1))["params"]
  counts = {name: (sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(part)), len(jax.tree.leaves(part)))
            for name, part in shapes.items()}
  # q(z1 | x, z2)'s image branch is its own module here (it runs once per image, not once per sample).
  counts["bottom_encoder"] = tuple(map(sum, zip(counts["bottom_encoder"], counts.pop("image_features"))))
  expected = {name: (sum(_REFERENCE_PARAMETER_COUNTS[kind](*sizes) for kind, *sizes in layers),
                     sum(_REFERENCE_TENSORS[kind] for kind, *_ in layers))
              for name, layers in reference.items()}
  assert counts == expected


def test_a_fused_mean_and_log_variance_layer_of_an_older_checkpoint_restores_into_the_two_heads(tmp_path):
  """Before GaussianHead, an encoder's mean and log-variance were one nn.Dense of 2·latent outputs (μ first),
  numbered after the module's other Dense layers. Such a layer computes what the two heads compute, and a
  checkpoint holding it (Adam's moments included) restores into the current layout to the bit."""
  encoder = networks.MLPEncoder((5,), 3, activation="tanh")
  x = jax.random.normal(jax.random.key(0), (4, 7))
  params = encoder.init(jax.random.key(1), x)["params"]
  fused = networks.with_fused_heads(params)
  assert set(fused) == {"Dense_0", "Dense_1"}
  hidden = jnp.tanh(x @ fused["Dense_0"]["kernel"] + fused["Dense_0"]["bias"])
  mean, log_variance = jnp.split(hidden @ fused["Dense_1"]["kernel"] + fused["Dense_1"]["bias"], 2, axis=-1)
  for got, expected in zip(encoder.apply({"params": params}, x), (mean, log_variance)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)

  config, model, hvae_params = _tiny_hvae("vampprior")
  tx = optim.make_optimizer(dataclasses.replace(config, optimizer="adam_norm_grad"), total_steps=10)
  state = train_state.TrainState.create(apply_fn=None, params=hvae_params, tx=tx)
  # One step, so that Adam's moments are not zero; jitted: one compilation, not one per eager operation.
  state = jax.jit(lambda state: state.apply_gradients(grads=jax.tree.map(jnp.cos, state.params)))(state)
  checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), keep=1)
  checkpointer.save(1, networks.with_fused_heads(state), {"step": 1})
  checkpointer.wait()
  restored, progress = checkpointer.restore(checkpointing.abstract_like(state))
  checkpointer.close()
  assert progress == {"step": 1}
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), restored, state)


def test_a_run_saved_before_the_split_heads_opens_and_scores_as_it_did_then(tmp_path):
  """tests/data/run_before_gaussian_heads: a tiny HVAE with the VampPrior, dense layers and adam_norm_grad,
  trained 2 steps by the code of ab80135, each Gaussian one fused Dense layer. Its fused layers are (4, 4), as
  are its hidden layers, so a head looked for under another layer's number would restore without a shape
  error: the scores, written by that code in expected.json, are what tell."""
  workdir = shutil.copytree(os.path.join(os.path.dirname(__file__), "data", "run_before_gaussian_heads"),
                            tmp_path / "run")
  run = gen_jax.load_run(str(workdir))
  assert networks.HEAD in run.params["top_encoder"] and networks.HEAD in run.params["bottom_encoder"]
  expected = json.loads((workdir / "expected.json").read_text())["log_likelihood_k4_seed5_first3"]
  np.testing.assert_allclose(run.log_likelihood(run.dataset.test_images[:3], k=4, seed=5), expected, rtol=1e-5)


@pytest.mark.parametrize("prior", ["standard_normal", "vampprior"])
def test_hvae_importance_weights_estimate_the_brute_force_likelihood(prior):
  """With one-dimensional z1 and z2, p(x) = ∫∫ p(x|z1,z2) p(z1|z2) p(z2) dz1 dz2 on a fine grid. The mean of
  the importance weights w = p(x, z) / q(z | x) is an unbiased estimate of p(x). With the output layers of
  q(z2|x), q(z1|x,z2) and p(z1|z2) set to zero all three are N(0, 1), so q is the prior, w = p(x | z1, z2) ≤ 1
  has no heavy tail, and over 200,000 draws the mean must agree with the quadrature within four standard
  errors (an untrained q far from the posterior gives weights whose sample variance cannot be trusted)."""
  config, model, params = _tiny_hvae(prior)
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.zeros_like(leaf) if path[0].key in ("top_encoder", "bottom_encoder", "bottom_prior")
      and path[1].key == networks.HEAD else leaf, params)
  images = np.asarray([[[[1.0], [0.0]], [[1.0], [1.0]]], [[[0.0], [0.0]], [[1.0], [0.0]]]], np.float32)
  grid = np.linspace(-7.0, 7.0, 561)
  step = grid[1] - grid[0]
  z2 = jnp.asarray(grid[:, None])
  statistics = model.apply({"params": params}, method="prior_statistics")
  log_p_z2 = np.asarray(model.apply({"params": params}, z2, statistics, method="log_prior"))
  prior_mean, prior_log_variance = (np.asarray(v)[:, 0] for v in model.apply({"params": params}, z2,
                                                                              method="bottom_prior_stats"))
  z1_grid, z2_grid = np.meshgrid(grid, grid, indexing="ij")
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(z1_grid.reshape(-1, 1)),
                                  jnp.asarray(z2_grid.reshape(-1, 1)), method="decode_both")).reshape(len(grid)**2, -1)
  log_p_z1 = -0.5 * (math.log(2 * math.pi) + prior_log_variance[None, :]
                     + (z1_grid - prior_mean[None, :])**2 / np.exp(prior_log_variance[None, :]))
  model_fns = vae.likelihood_model(model, config)
  for x in images:
    log_joint = (_bernoulli_log_likelihood(logits, x.reshape(-1)).reshape(z1_grid.shape) + log_p_z1
                 + log_p_z2[None, :])
    brute_force = float(np.exp(jax.nn.logsumexp(log_joint) + 2 * math.log(step)))
    encoded = model_fns.encode(params, jnp.asarray(x[None]), None)
    weights = np.exp(np.asarray(model_fns.log_weights(params, encoded, jnp.asarray(x[None]), None, jax.random.key(5),
                                                      200_000), np.float64)[:, 0])
    standard_error = weights.std() / math.sqrt(len(weights))
    assert standard_error < 0.05 * weights.mean()
    assert abs(weights.mean() - brute_force) < 4 * standard_error, (weights.mean(), brute_force, standard_error)


def test_validation_split_is_held_out_from_the_end_of_the_training_split_and_binarised_once(tmp_path):
  images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1) * 6
  train, labels, held, held_labels = image_data._hold_out(images, np.arange(10), 3, "npz:x")
  np.testing.assert_array_equal(held, images[7:])
  np.testing.assert_array_equal(train, images[:7])
  assert held_labels.tolist() == [7, 8, 9] and labels.tolist() == list(range(7))
  with pytest.raises(UserError, match=r"--num_validation_examples=10 leaves no training examples"):
    image_data._hold_out(images, None, 10, "npz:x")


def test_the_vampprior_codes_held_out_draw_is_its_binarize_bit_for_bit():
  """--held_out_binarization=vampprior_code gives the bits of the reference's `binarize` (base_load_data.py):
  np.random.seed(777), then np.random.binomial(1, x) of the validation split's (N, 784) float64 pixels / 255,
  then of the test split's; the split held out is the training split's end, in file order."""
  config = vae.Config(num_train_examples=60, num_test_examples=20, held_out_binarization="vampprior_code")
  data = image_data.load_image_data(config, num_validation_examples=10)
  raw = image_data.load_image_data(dataclasses.replace(config, binarization="none", held_out_binarization="own_seeds"),
                                   num_validation_examples=10)
  saved = np.random.get_state()
  try:
    np.random.seed(777)
    x_val = np.random.binomial(1, raw.validation_images.reshape(10, 784) / 255.)
    x_test = np.random.binomial(1, raw.test_images.reshape(20, 784) / 255.)
  finally:
    np.random.set_state(saved)
  np.testing.assert_array_equal(data.validation_images.reshape(10, 784), x_val * 255)
  np.testing.assert_array_equal(data.test_images.reshape(20, 784), x_test * 255)
  own = image_data.load_image_data(dataclasses.replace(config, held_out_binarization="own_seeds"), 10)
  assert np.mean(own.test_images != data.test_images) > 0.01  # Another draw: the choice is read.


@pytest.mark.parametrize("overrides, fragment", [
    (dict(prior="vampprior", num_pseudo_inputs=0), "--num_pseudo_inputs=0"),
    (dict(early_stopping_patience=5), "--early_stopping_patience=5 needs a validation split"),
    (dict(prior="vampprior", architecture="two_layer"), "--prior=vampprior with --architecture=two_layer"),
    (dict(architecture="conv", hidden_layer="gated", log_variance_clamp=(-6.0, 2.0)),
     "--architecture=conv does not read --hidden_layer=gated --log_variance_clamp=-6.0,2.0; allowed: "
     "--hidden_layer=dense, --log_variance_clamp= (the defaults) with this architecture"),
    (dict(architecture="two_layer", weight_init="he_normal"), "--architecture=two_layer does not read --weight_init"),
    (dict(architecture="hvae", init_std=0.01), "--architecture=hvae does not read --init_std=0.01; allowed: "
     "--init_std=0.0"),
    (dict(prior="vampprior", conditional=True), "--prior=vampprior with --architecture=mlp --conditional"),
    # Settings that another setting leaves unread: no top layer, no pseudo-inputs, no activation, no std.
    (dict(top_latent_dim=40), "--architecture=mlp does not read --top_latent_dim=40; allowed: --top_latent_dim=50"),
    (dict(architecture="hvae", top_hidden_sizes=(300,)), "--architecture=hvae does not read --top_hidden_sizes=300"),
    (dict(hidden_layer="gated", activation="tanh"),
     "--hidden_layer=gated does not read --activation=tanh; allowed: --activation=relu (the defaults)"),
    (dict(likelihood="continuous_bernoulli", gaussian_std=0.1), "--likelihood=continuous_bernoulli does not read"),
    (dict(num_pseudo_inputs=50, pseudo_input_init_std=0.1),
     "--prior=standard_normal does not read --num_pseudo_inputs=50 --pseudo_input_init_std=0.1"),
    (dict(prior="laplace"), f"--prior='laplace' is unknown; allowed: {', '.join(vae.PRIORS)}"),
    (dict(log_variance_clamp=(2.0, -6.0)), "--log_variance_clamp=2.0,-6.0"),
    (dict(hidden_layer="maxout"), "--hidden_layer='maxout' is unknown"),
    (dict(kl_warmup_epochs=3, kl_warmup_steps=10), "--kl_warmup_steps=10 with --kl_warmup_epochs=3"),
    (dict(optimizer="adamw"), "adam_norm_grad"),
    (dict(held_out_binarization="numpy"), "--held_out_binarization='numpy' is unknown; allowed: own_seeds, "
     "vampprior_code"),
    (dict(binarization="none", held_out_binarization="vampprior_code"),
     "--binarization=none does not read --held_out_binarization=vampprior_code"),
])
def test_bad_density_settings_are_refused_in_one_line(overrides, fragment):
  with pytest.raises(UserError) as error:
    vae.validate(vae.Config(**overrides))
  assert fragment in str(error.value) and "\n" not in str(error.value)


# A validation score per step (higher is better): a dip during the warm-up (steps 2-3), the best 3.0 at step 5
# (the equal 3.0 at step 7 is no improvement), then worse until step 12.
SCRIPTED_CURVE = [None, 1.0, 0.5, 0.4, 2.0, 3.0, 2.9, 3.0, 2.5, 2.0, 1.0, 0.0, 5.0, 6.0]


class _ScriptedTask:
  """test_loop's y = 3x task, validated on a scripted curve of 'score' per step (higher is better)."""

  def __init__(self, curve):
    self.curve = curve

  def task(self, num_steps, patience, start_step, keep=1):
    schedule = loop.Schedule(num_steps=num_steps, steps_per_epoch=1, batch_size=16, log_every_steps=1,
                             eval_every_steps=1, checkpoint_every_steps=1, keep_checkpoints=keep, steps_per_dispatch=1)
    validate = lambda state: {"score": self.curve[int(state.step)]}
    return dataclasses.replace(
        _CountingTask().task(schedule),
        evaluate=lambda state: {"w": float(state.params["w"]), "at_step": int(state.step)},
        final_evaluate=lambda state: {"final": 1},
        selection=loop.Selection(validate=validate, metric="score", patience=patience, start_step=start_step))


def test_early_stopping_rule_on_a_scripted_curve():
  # Validation after epochs 1..12; the warm-up lasts until step 4, so the dip at steps 2-3 never counts.
  curve = SCRIPTED_CURVE
  record, stopped_at = {}, None
  for step in range(1, 13):
    record, stop = loop.early_stopping_update(record, step, curve[step], patience=3, start_step=4)
    if stop:
      stopped_at = step
      break
  # Best 3.0 at step 5 (the equal 3.0 at step 7 is no improvement); steps 6, 7, 8, 9 fail; 4 > 3 at step 9.
  assert record["best_step"] == 5 and record["best"] == 3.0 and stopped_at == 9
  # Without the warm-up rule the dip after step 1 would have stopped it at step 3 (patience 1).
  record = {}
  for step in range(1, 4):
    record, stop = loop.early_stopping_update(record, step, curve[step], patience=1, start_step=0)
  assert stop and record["best_step"] == 1
  record, stop = loop.early_stopping_update({}, 1, float("nan"), patience=3, start_step=0)
  record, stop = loop.early_stopping_update(record, 2, float("nan"), patience=3, start_step=0)
  assert record["best_step"] == 1 and record["since_best"] == 1  # Of two NaNs the first stays, as in orbax.
  record, stop = loop.early_stopping_update(record, 3, 1.0, patience=1, start_step=0)
  assert record["best_step"] == 3 and not stop  # A NaN is never the best once a number arrives.
  record, stop = loop.early_stopping_update(record, 4, float("nan"), patience=1, start_step=0)
  assert record["best_step"] == 3 and record["since_best"] == 1
  record, _ = loop.early_stopping_update({}, 1, float("nan"), patience=3, start_step=0)
  record, _ = loop.early_stopping_update(record, 2, -math.inf, patience=3, start_step=0)
  assert record["best_step"] == 1  # −inf ranks with a NaN, and of equal ranks the earlier stays, as in orbax.
  # orbax's best checkpoint is ranked the same way: a NaN below every number, the earlier of two NaNs first.
  keys = [checkpointing.selection_key({"value": value, "step": step})
          for step, value in [(1, float("nan")), (2, -1e30), (3, 1.0), (4, 1.0), (5, float("nan"))]]
  assert max(keys) == keys[2] and min(keys) == keys[4] and keys[0] > keys[4]


def test_early_stopping_counts_from_the_end_of_the_warm_up_in_epochs_or_steps(tmp_path):
  tiny = dict(num_train_examples=200, num_validation_examples=100, num_test_examples=50, batch_size=50,
              hidden_sizes=(8,), latent_dim=2, early_stopping_patience=1)
  for warm_up, start_step in [(dict(kl_warmup_epochs=3), 3 * 2), (dict(kl_warmup_steps=7), 7), ({}, 0)]:
    task = vae.make_task(vae.Config(**tiny, **warm_up), str(tmp_path), parallel.make_mesh())
    assert task.selection.start_step == start_step and task.selection.patience == 1


def test_training_stops_early_and_the_best_checkpoint_is_the_runs_model(tmp_path):
  scripted = _ScriptedTask(SCRIPTED_CURVE)
  mesh = parallel.make_mesh()
  state = loop.train(scripted.task(num_steps=13, patience=3, start_step=4), str(tmp_path), seed=0, mesh=mesh)
  assert int(state.step) == 5  # The returned state is the best-validation one, restored.
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  validation = [row["step"] for row in rows if row["split"] == "validation"]
  assert validation == list(range(1, 10))  # Stopped after step 9.
  tests = [row for row in rows if row["split"] == "test"]
  assert len(tests) == 1 and tests[0]["step"] == 5 and tests[0]["at_step"] == 5 and tests[0]["final"] == 1
  # orbax kept the latest (keep=1) and the best.
  assert checkpointing.Checkpointer(str(tmp_path / "checkpoints"), 1, selecting=True).all_steps() == [5, 9]
  # Running the finished command again trains nothing and writes nothing new.
  again = loop.train(scripted.task(num_steps=13, patience=3, start_step=4), str(tmp_path), seed=0, mesh=mesh)
  assert int(again.step) == 5
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(rows)


@pytest.mark.parametrize("selecting, fault", [(True, "sigterm_final"), (False, "sigterm_final"), (False, "sigterm")])
def test_a_signal_during_the_final_evaluation_stops_at_once_and_a_rerun_ends_as_if_uninterrupted(
    selecting, fault, tmp_path, monkeypatch):
  """SIGTERM as the final evaluation of the run's model starts (`sigterm`: already during the last dispatch,
  before it). With selection: the best step 5's, after early stopping saved step 9. Without: the last step
  13's, before its checkpoint (the latest is step 12's). Either way Preempted at once, saying so; the same
  command then ends with an uninterrupted run's rows."""
  task = _ScriptedTask(SCRIPTED_CURVE).task(num_steps=13, patience=3, start_step=4)
  if selecting:
    model_step, latest_saved, message = 5, 9, "after training ended at step 9, which is saved; re-running"
  else:
    task = dataclasses.replace(task, selection=None)
    model_step, latest_saved, message = 13, 12, "during the final evaluation at step 13, before its checkpoint; "
  stopped, straight = tmp_path / "stopped", tmp_path / "straight"
  monkeypatch.setenv("GEN_JAX_FAULT", f"{fault}:{model_step}")
  with pytest.raises(loop.Preempted, match=message) as stop:
    loop.train(task, str(stopped), seed=0, mesh=parallel.make_mesh())
  assert stop.value.exit_code == 128 + 15
  assert checkpointing.saved_steps(str(stopped / "checkpoints"))[-1] == latest_saved
  monkeypatch.delenv("GEN_JAX_FAULT")
  assert int(loop.train(task, str(stopped), seed=0, mesh=parallel.make_mesh()).step) == model_step
  assert int(loop.train(task, str(straight), seed=0, mesh=parallel.make_mesh()).step) == model_step
  rows = untimed_rows(stopped)
  assert rows == untimed_rows(straight)
  assert rows[-1] | {"split": "test", "step": model_step, "final": 1} == rows[-1]


@pytest.mark.parametrize("selecting", [True, False])
def test_a_finished_run_asked_for_a_new_final_evaluation_writes_it_once(selecting, tmp_path):
  """As a VAE rerun with a new --final_iwae_k: the finished run gets one more test row, at its model's step,
  with the final evaluation; a third run adds nothing."""
  task = _ScriptedTask(SCRIPTED_CURVE).task(num_steps=13, patience=3, start_step=4)
  task, model_step = (task, 5) if selecting else (dataclasses.replace(task, selection=None), 13)
  without = dataclasses.replace(task, final_evaluate=lambda state: {}, identity_keys=("k",))
  with_k = dataclasses.replace(without, final_evaluate=lambda state: {"k": 7, "at_step": int(state.step)},
                               final_row_identity={"k": 7})
  read_rows = lambda: [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  loop.train(without, str(tmp_path), seed=0, mesh=parallel.make_mesh())
  finished = read_rows()
  assert not [row for row in finished if "k" in row]
  assert int(loop.train(with_k, str(tmp_path), seed=0, mesh=parallel.make_mesh()).step) == model_step
  rows = read_rows()
  assert rows[:-1] == finished
  assert rows[-1] | {"split": "test", "step": model_step, "k": 7, "at_step": model_step} == rows[-1]
  loop.train(with_k, str(tmp_path), seed=0, mesh=parallel.make_mesh())
  assert read_rows() == rows


def test_early_stopping_resumes_its_count_from_the_checkpoint(tmp_path):
  """A run stopped at step 7 and resumed (a longer --num_steps) stops where an uninterrupted one does."""
  scripted = _ScriptedTask(SCRIPTED_CURVE)
  mesh = parallel.make_mesh()
  loop.train(scripted.task(num_steps=7, patience=3, start_step=4), str(tmp_path / "a"), seed=0, mesh=mesh)
  resumed = loop.train(scripted.task(num_steps=13, patience=3, start_step=4), str(tmp_path / "a"), seed=0,
                       mesh=mesh)
  straight = loop.train(scripted.task(num_steps=13, patience=3, start_step=4), str(tmp_path / "b"), seed=0,
                        mesh=mesh)
  assert int(resumed.step) == int(straight.step) == 5
  validation = lambda name: [json.loads(line)["step"] for line in (tmp_path / name / "metrics.jsonl").read_text()
                             .splitlines() if '"validation"' in line]
  assert validation("a") == validation("b") == list(range(1, 10))


def test_density_flagfiles_train_select_and_open_on_a_tiny_budget(tmp_path):
  """The VampPrior flagfiles of the three architectures (each includes its Gaussian-prior row's flagfile) on
  80 images (40 of them the validation split), batches of 20: validation rows every epoch, one test row with
  the k-sample bound at the best step, and the run opens through load_run at that checkpoint."""
  from conftest import finish, load_script, start_experiment
  tiny = ("--num_train_examples=80", "--batch_size=20", "--num_validation_examples=40", "--num_test_examples=40",
          "--num_epochs=2", "--kl_warmup_epochs=1", "--early_stopping_patience=1", "--eval_batch_size=40",
          "--final_iwae_k=4", "--num_pseudo_inputs=4", "--num_samples=8", "--num_images=4", "--log_every_steps=2")
  rows = ("vampprior", "hvae_vampprior", "convhvae_vampprior")
  processes = {row: start_experiment("vae", f"--flagfile=experiments/configs/density_{row}.cfg",
                                     f"--workdir={tmp_path / row / 'seed0'}", *tiny) for row in rows}
  best_steps = {}
  for row, process in processes.items():
    result = finish(process, timeout=400)
    assert result.returncode == 0, (row, result.stderr[-2000:])
    metrics = [json.loads(line) for line in (tmp_path / row / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["split"] == "validation"] == [2, 4]
    tests = [m for m in metrics if m["split"] == "test"]
    best = max((m for m in metrics if m["split"] == "validation"), key=lambda m: m["elbo"])
    assert len(tests) == 1 and tests[0]["step"] == best["step"] and tests[0]["iwae_k"] == 4
    assert tests[0]["log_likelihood"] >= tests[0]["elbo"] - 1.0  # L_4 is (about) no worse than the ELBO.
    best_steps[row] = best["step"]
  run = gen_jax.load_run(str(tmp_path / "hvae_vampprior" / "seed0"))
  assert run.step == best_steps["hvae_vampprior"]
  assert run.sample(3).shape == (3, 28, 28, 1)
  # The table script reads these runs: each row measured at k = 4, its best epoch, and finished (2 of 2 epochs).
  density_table = load_script("density_table")
  text, curves = density_table.table(str(tmp_path))
  lines = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
  for row in rows:
    name = density_table.PUBLISHED[row][0]
    assert f"| 4 | 1 | {best_steps[row] // 2} / 2 |" in lines[name], lines[name]
  assert "not run" in lines["VAE, Gaussian prior"] and len(curves) == 3
  bottom, top = density_table.figure(curves, str(tmp_path / "validation_curves.png"))
  assert (tmp_path / "validation_curves.png").stat().st_size > 0
  # Two-epoch runs end far below the published values; their last validation ELBOs stay inside the y-range.
  last_elbos = [[m["elbo"] for m in metric_rows if m["split"] == "validation"][-1]
                for metric_rows, _ in curves.values()]
  assert bottom <= min(last_elbos) and top >= max(density_table.PUBLISHED[row][1] for row in rows)
  # Labels of nearly equal published values (the HVAE's and the VampPrior's) are pushed apart, downwards.
  assert density_table._spread_labels([-226.72, -227.35, -227.37], 0.5) == pytest.approx([-226.72, -227.35, -227.85])
  # A seed's number: its newest measured step at the largest k there; a later cheap bound does not replace it.
  validation = [{"split": "validation", "step": step, "elbo": -230.0, "wall_time": 1.0} for step in (2, 4)]
  bounds = [{"split": "test", "step": step, "log_likelihood": value, "iwae_k": k}
            for step, value, k in [(2, -229.0, 5000), (4, -228.0, 5000), (4, -229.5, 10)]]
  summary = density_table.seed_summary(validation + bounds, {"num_epochs": 2})
  assert (summary["log_likelihood"], summary["iwae_k"]) == (-228.0, 5000)
