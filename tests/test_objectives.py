"""The VAE's maths against closed forms, numerical integrals and a computation written out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import objectives
from gen_jax.models import mixture as gmm, networks
from gen_jax.models.vae import VAE
from gen_jax.families import vae as vae_family


def test_kl_closed_form_matches_monte_carlo():
  mean = jnp.array([0.7, -1.2, 0.0, 2.0])
  log_variance = jnp.array([-1.0, 0.5, 0.0, -2.5])
  closed = float(objectives.kl_to_standard_normal(mean, log_variance))
  z = objectives.reparameterize(jax.random.key(0), mean, log_variance, num_samples=400_000)
  log_ratio = (objectives.gaussian_log_density(z, mean, log_variance)
               - objectives.standard_normal_log_density(z))
  estimate, standard_error = float(log_ratio.mean()), float(log_ratio.std() / math.sqrt(len(log_ratio)))
  assert abs(estimate - closed) < 4 * standard_error + 1e-4
  # Exact special case: q = p gives zero, and every term is non-negative.
  assert float(objectives.kl_to_standard_normal(jnp.zeros(3), jnp.zeros(3))) == 0.0
  assert closed > 0


def test_kl_sigma_part_is_exp_minus_one_plus_s():
  """The lecture's curve: ½(exp(s) − (1 + s)) per dimension at zero mean, minimal (0) at s = 0."""
  s = jnp.linspace(-3.0, 3.0, 61)
  kl = jax.vmap(lambda v: objectives.kl_to_standard_normal(jnp.zeros(1), v[None]))(s)
  np.testing.assert_allclose(kl, 0.5 * (np.exp(s) - (1 + s)), rtol=1e-5, atol=1e-6)
  assert int(jnp.argmin(kl)) == 30


def test_softplus_matches_jax_in_value_and_gradient():
  x = jnp.concatenate([jnp.linspace(-80.0, 80.0, 401), jnp.array([0.0, 1e-8, -1e-8])])
  np.testing.assert_allclose(objectives.softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(jax.vmap(jax.grad(objectives.softplus))(x), jax.nn.sigmoid(x), rtol=1e-6,
                             atol=1e-7)


@pytest.mark.parametrize("logit", [-12.0, -3.0, -0.5, -1e-3, 0.0, 2e-3, 0.7, 4.0, 15.0])
def test_continuous_bernoulli_is_a_normalised_density_with_the_stated_mean(logit):
  x = np.linspace(0.0, 1.0, 20001)
  log_density = objectives.log_likelihood("continuous_bernoulli", jnp.full((x.size, 1), logit),
                                          jnp.asarray(x)[:, None])
  density = np.exp(np.asarray(log_density, np.float64))
  assert abs(np.trapezoid(density, x) - 1.0) < 2e-4
  mean = float(objectives.decoder_mean("continuous_bernoulli", jnp.array(logit)))
  assert abs(np.trapezoid(x * density, x) - mean) < 2e-4


def test_bernoulli_and_gaussian_log_likelihoods_against_their_formulas():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 2, (3, 2, 2, 1)).astype(np.float32)
  logits = rng.normal(size=(3, 2, 2, 1)).astype(np.float32)
  p = 1 / (1 + np.exp(-logits))
  expected = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3))
  np.testing.assert_allclose(objectives.log_likelihood("bernoulli", logits, x), expected, rtol=1e-5)

  mean = rng.uniform(size=(3, 2, 2, 1)).astype(np.float32)
  std = 0.3
  expected = np.sum(-0.5 * np.log(2 * np.pi * std**2) - (x - mean)**2 / (2 * std**2), axis=(1, 2, 3))
  np.testing.assert_allclose(objectives.log_likelihood("gaussian", mean, x, gaussian_std=std), expected,
                             rtol=1e-5)
  # Learned variance: mean and log-variance stacked on the channel axis.
  log_variance = rng.normal(size=mean.shape).astype(np.float32)
  expected = np.sum(-0.5 * (np.log(2 * np.pi) + log_variance) - (x - mean)**2 / (2 * np.exp(log_variance)),
                    axis=(1, 2, 3))
  stacked = np.concatenate([mean, log_variance], axis=-1)
  np.testing.assert_allclose(objectives.log_likelihood("gaussian", stacked, x), expected, rtol=1e-5)


def test_elbo_of_a_tiny_model_written_out_by_hand():
  """encode -> reparameterise -> decode -> Bernoulli log-likelihood − closed-form KL, in plain numpy."""
  image_shape = (2, 2, 1)
  config = vae_family.VAEConfig(hidden_sizes=(3,), latent_dim=2, activation="tanh")
  model = VAE(networks.MLPEncoder((3,), 2, "tanh"), networks.MLPDecoder((3,), image_shape, 1, "tanh"))
  x = jnp.array([[[[1.0], [0.0]], [[1.0], [1.0]]], [[[0.0], [0.0]], [[1.0], [0.0]]]])
  params = model.init(jax.random.key(1), x, jax.random.key(2))["params"]
  key = jax.random.key(3)
  recon, kl = vae_family.per_example_elbo(model, params, x, key, None, config)

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  flat = np.asarray(x, np.float64).reshape(2, 4)
  dense = lambda layer, h: h @ layer["kernel"] + layer["bias"]
  hidden = np.tanh(dense(p["encoder"]["Dense_0"], flat))
  head = p["encoder"][networks.HEAD]
  mean = hidden @ head["mean_kernel"] + head["mean_bias"]
  log_variance = hidden @ head["log_variance_kernel"] + head["log_variance_bias"]
  epsilon = np.asarray(jax.random.normal(key, (2, 2)), np.float64)  # The draw reparameterize makes.
  z = mean + np.exp(0.5 * log_variance) * epsilon
  logits = dense(p["decoder"]["Dense_1"], np.tanh(dense(p["decoder"]["Dense_0"], z)))
  probability = 1 / (1 + np.exp(-logits))
  expected_recon = np.sum(flat * np.log(probability) + (1 - flat) * np.log(1 - probability), axis=1)
  expected_kl = 0.5 * np.sum(np.exp(log_variance) + mean**2 - 1 - log_variance, axis=1)
  np.testing.assert_allclose(recon, expected_recon, rtol=1e-5)
  np.testing.assert_allclose(kl, expected_kl, rtol=1e-5)


def test_beta_weights_the_loss_but_the_reported_elbo_is_the_true_bound():
  recon, kl = jnp.array([-100.0, -80.0]), jnp.array([10.0, 30.0])
  loss, metrics = objectives.elbo_terms(recon, kl, kl_weight=0.5)
  assert float(loss) == pytest.approx(-np.mean([-100 - 5, -80 - 15]))
  assert float(metrics["elbo"]) == pytest.approx(-110.0)
  assert float(metrics["elbo"]) == pytest.approx(float(metrics["recon"] - metrics["kl"]))


def test_kl_warmup_is_linear_then_constant():
  weights = [float(objectives.kl_weight_schedule(jnp.array(t), beta=2.0, warmup_steps=10)) for t in
             (0, 5, 10, 50)]
  assert weights == pytest.approx([0.0, 1.0, 2.0, 2.0])
  assert float(objectives.kl_weight_schedule(jnp.array(3), beta=0.7)) == pytest.approx(0.7)


def test_reparameterisation_is_keyed_and_differentiable():
  mean, log_variance = jnp.array([1.0, -1.0]), jnp.array([0.0, 1.0])
  a = objectives.reparameterize(jax.random.key(0), mean, log_variance)
  b = objectives.reparameterize(jax.random.key(0), mean, log_variance)
  np.testing.assert_array_equal(a, b)
  assert not np.any(np.asarray(a) == np.asarray(objectives.reparameterize(jax.random.key(1), mean, log_variance)))
  # dz/dμ = 1 and dz/d(log σ²) = ½ σ ε: the gradient flows through the sample, the trick's point.
  np.testing.assert_array_equal(
      jax.grad(lambda m: objectives.reparameterize(jax.random.key(0), m, log_variance).sum())(mean), 1.0)
  epsilon = jax.random.normal(jax.random.key(0), (2,))
  grad = jax.grad(lambda v: objectives.reparameterize(jax.random.key(0), mean, v).sum())(log_variance)
  np.testing.assert_allclose(grad, 0.5 * jnp.exp(0.5 * log_variance) * epsilon, rtol=1e-6)


def test_a_learned_variance_decoder_reads_each_pixels_mean_and_log_variance_from_its_own_channels():
  """A Gaussian decoder with learned variance writes (mean, log-variance) per pixel on the channel axis, 2C
  channels for C: the log-likelihood and the decoder mean must read the same pairs (the likelihood reorders
  them for speed)."""
  rng = np.random.default_rng(1)
  x = rng.random((2, 3, 4, 2)).astype(np.float32)  # (batch, H, W, C = 2)
  output = rng.normal(size=(5, 2, 3, 4, 4)).astype(np.float32)  # (k, batch, H, W, 2C): means, then log-vars.
  mean, log_variance = output[..., :2].astype(np.float64), output[..., 2:].astype(np.float64)
  direct = np.sum(-0.5 * (math.log(2 * math.pi) + log_variance + (x - mean)**2 / np.exp(log_variance)),
                  axis=(-3, -2, -1))
  config = vae_family.Config(likelihood="gaussian", gaussian_std=0.0)
  np.testing.assert_allclose(vae_family._log_px(config, jnp.asarray(output), jnp.asarray(x)), direct, rtol=1e-5)
  np.testing.assert_allclose(objectives.decoder_mean("gaussian", jnp.asarray(output)), np.clip(mean, 0, 1),
                             rtol=1e-6)
  # A fixed std: the output is the mean itself; Bernoulli: the sigmoid of the logits.
  np.testing.assert_allclose(objectives.decoder_mean("gaussian", jnp.asarray(x), 0.1), x)
  np.testing.assert_allclose(objectives.decoder_mean("bernoulli", jnp.asarray(output)), 1 / (1 + np.exp(-output)),
                             rtol=1e-5)


def _dot_precisions(function, *args):
  """The precision of every dot_general in `function`'s jaxpr, those nested in scans and jitted calls too."""
  found = []

  def visit(jaxpr):
    for equation in jaxpr.eqns:
      if equation.primitive.name == "dot_general":
        found.append(equation.params["precision"])
      for value in equation.params.values():
        for inner in value if isinstance(value, (tuple, list)) else (value,):
          inner = getattr(inner, "jaxpr", inner)  # A closed jaxpr holds its jaxpr.
          if hasattr(inner, "eqns"):
            visit(inner)

  visit(jax.make_jaxpr(function)(*args).jaxpr)
  return found


def _gmm_fit_and_score(likelihood):
  """One EM step and the log-likelihood of its result, for a 3-component mixture of 4-pixel data."""
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (6, 4)), jnp.float32)

  def fit_and_score(x):
    state = gmm.initialize(jax.random.key(0), x, 3, likelihood)
    state, _ = gmm.em_step(state, x.reshape(2, 3, 4), jnp.ones((2, 3)), 1.0, likelihood)
    return gmm.log_likelihood(state, x, likelihood)

  return fit_and_score, x


@pytest.mark.parametrize("case", ["vampprior", "vampprior_gradient", "gmm_bernoulli", "gmm_gaussian"])
def test_matmuls_of_expanded_squares_keep_float32_on_every_backend(case):
  """The CPU computes every float32 matmul in float32 and so cannot show the TF32 or bfloat16 rounding of an
  accelerator's default precision (see objectives.full_precision_matmul); what it can show is that every
  matmul of these densities, and of the VampPrior's gradient, asks for the highest precision."""
  z, means, log_variances = jnp.zeros((5, 3)), jnp.ones((4, 3)), jnp.zeros((4, 3))
  functions = {
      "vampprior": (objectives.mixture_log_density, z, means, log_variances),
      "vampprior_gradient": (jax.grad(lambda *args: jnp.sum(objectives.mixture_log_density(*args)), (0, 1, 2)),
                             z, means, log_variances),
      "gmm_bernoulli": _gmm_fit_and_score("bernoulli"),
      "gmm_gaussian": _gmm_fit_and_score("gaussian"),
  }
  precisions = _dot_precisions(*functions[case])
  assert precisions and all(precision == (jax.lax.Precision.HIGHEST,) * 2 for precision in precisions)
