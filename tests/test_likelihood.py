"""The importance-weighted bound, the k-sample likelihood evaluator and IWAE training, against exact maths.

The exact case is probabilistic PCA: p(z) = N(0, I), p(x | z) = N(Wz + b, σ²I) has
log p(x) = log N(x; b, WWᵀ + σ²I) and the Gaussian posterior N(M⁻¹Wᵀ(x − b), σ²M⁻¹), M = WᵀW + σ²I.
With orthogonal columns in W, M is diagonal, so a linear VAE encoder (hidden_sizes=()) can represent the
exact posterior: then every importance weight equals p(x) and the ELBO is log p(x).
"""

import functools
import math
import subprocess
import sys
import time

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import gen_jax
from gen_jax import objectives, optim, parallel, plots
from gen_jax.evaluation import likelihood
from gen_jax.families import latent_code, vae
from gen_jax.models import hierarchical, networks
from gen_jax.models.vae import VAE

from conftest import REPO, assert_one_line_error, run_experiment


NUM_DIMS, LATENT_DIM, NOISE_STD = 6, 2, 0.5


def _ppca():
  """A PPCA model (W with orthogonal columns), 40 data points drawn from it, and its exact log p(x)."""
  rng = np.random.default_rng(0)
  basis, _ = np.linalg.qr(rng.normal(size=(NUM_DIMS, LATENT_DIM)))
  weights = basis * np.array([2.0, 0.7])  # Orthogonal columns of different lengths.
  bias = rng.normal(size=NUM_DIMS)
  covariance = weights @ weights.T + NOISE_STD**2 * np.eye(NUM_DIMS)
  x = rng.multivariate_normal(bias, covariance, size=40)
  difference = x - bias
  _, log_det = np.linalg.slogdet(covariance)
  log_px = -0.5 * (NUM_DIMS * math.log(2 * math.pi) + log_det
                   + np.einsum("nd,de,ne->n", difference, np.linalg.inv(covariance), difference))
  return weights, bias, x, log_px


def _linear_vae(weights, bias, mean_scale=1.0, log_variance_shift=0.0):
  """A VAE with linear encoder and decoder holding the PPCA decoder and its exact posterior (or a worse
  one: posterior mean scaled by `mean_scale`, log-variance shifted)."""
  config = vae.VAEConfig(likelihood="gaussian", gaussian_std=NOISE_STD, architecture="mlp")
  model = VAE(networks.MLPEncoder((), LATENT_DIM), networks.MLPDecoder((), (1, NUM_DIMS, 1)))
  gram = weights.T @ weights + NOISE_STD**2 * np.eye(LATENT_DIM)  # M, diagonal.
  posterior_variance = NOISE_STD**2 / np.diag(gram)
  mean_map = weights / np.diag(gram) * mean_scale  # x − b ↦ M⁻¹Wᵀ(x − b), as a (D, d) kernel.
  params = {
      "encoder": {networks.HEAD: {
          "mean_kernel": mean_map, "log_variance_kernel": np.zeros((NUM_DIMS, LATENT_DIM)),
          "mean_bias": -bias @ mean_map, "log_variance_bias": np.log(posterior_variance) + log_variance_shift}},
      "decoder": {"Dense_0": {"kernel": weights.T, "bias": bias}}}
  return model, config, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)


def _images(x):
  return jnp.asarray(x, jnp.float32).reshape(-1, 1, NUM_DIMS, 1)


def test_ppca_exact_posterior_elbo_and_bound_equal_log_likelihood():
  weights, bias, x, log_px = _ppca()
  model, config, params = _linear_vae(weights, bias)
  terms = jax.jit(lambda p: vae.per_example_terms(model, p, _images(x), jax.random.key(1), None, config,
                                                  num_samples=8))
  log_weights, recon, kl = terms(params)
  # At the exact posterior every weight p(x, z)/q(z|x) is p(x): no spread over samples, all equal log p(x).
  np.testing.assert_allclose(log_weights, np.broadcast_to(log_px, log_weights.shape), atol=2e-4)
  np.testing.assert_allclose(objectives.importance_weighted_bound(log_weights), log_px, atol=2e-4)
  # The closed-form-KL ELBO is exact only in expectation over z; the gap is Monte-Carlo noise.
  assert np.mean(np.abs(recon - kl - log_px)) < 0.5
  # That expectation in closed form, E_q log p(x|z) = log N(x; Wμ + b, σ²I) − tr(W Σ Wᵀ)/(2σ²), minus the KL
  # the model computed, is log p(x) to float precision: a KL off by a fraction of a nat shows here.
  gram = np.diag(weights.T @ weights) + NOISE_STD**2
  posterior_mean, posterior_variance = (x - bias) @ (weights / gram), NOISE_STD**2 / gram
  residual = x - posterior_mean @ weights.T - bias
  expected_recon = (-0.5 * np.sum(residual**2, axis=1) / NOISE_STD**2
                    - 0.5 * NUM_DIMS * math.log(2 * math.pi * NOISE_STD**2)
                    - 0.5 * np.sum(weights**2 @ posterior_variance) / NOISE_STD**2)
  np.testing.assert_allclose(expected_recon - np.asarray(kl), log_px, atol=1e-3)
  # The per-image evaluator (load_run's log_likelihood) gives each image its own log p(x), in the given order,
  # across a padded last chunk (40 images in chunks of 12) and a partial chunk of samples (k = 7, 3 a chunk).
  per_image = likelihood.make_per_example_log_likelihood(vae.likelihood_model(model, config), 7,
                                                         images_per_chunk=12, rows_per_chunk=36)
  np.testing.assert_allclose(per_image(params, np.asarray(_images(x)), None, seed=0), log_px, atol=2e-4)


def test_the_chunked_evaluators_bound_rises_towards_log_likelihood_and_it_counts_active_units():
  weights, bias, x, log_px = _ppca()
  model, config, params = _linear_vae(weights, bias, mean_scale=0.6, log_variance_shift=0.8)
  lvm = vae.likelihood_model(model, config)
  images = np.asarray(_images(x))  # The evaluator takes raw data and scales uint8 by 1/255: pass floats.
  mesh = parallel.make_mesh()
  bounds, evaluators = {}, {}
  for k in (1, 30, 3000):
    # 12 images per chunk, so the last of 40 is padded (its padding masked out), and 240 decoder rows, 20
    # samples a chunk: k = 30 ends in a partial chunk of samples.
    evaluators[k] = likelihood.make_log_likelihood_evaluator(lvm, images * 255.0, None, k, mesh, seed=0,
                                                             images_per_chunk=12, rows_per_chunk=240,
                                                             discrete=False)
    bounds[k] = evaluators[k](params)["log_likelihood"]
  exact = float(np.mean(log_px))
  assert bounds[1] < bounds[30] < bounds[3000]
  assert exact - bounds[1] > 0.5  # The worse encoder leaves a real gap at k = 1 ...
  # ... that k = 3000 closes to within the estimate's noise (±0.01 here: the weights are heavy-tailed).
  assert abs(exact - bounds[3000]) < 0.03
  # Active units (Burda et al.: Var_x E_q[u|x] > 1e-2) over the 40 images and not the 8 padded ones, with
  # the variances set a few percent either side of the threshold.
  head = params["encoder"][networks.HEAD]
  kernel = np.asarray(head["mean_kernel"], np.float64)
  spread = ((x - bias) @ kernel).var(axis=0)

  def with_variances(variances):  # The mean map rescaled per unit so that Var_x E_q[u|x] = `variances`.
    scaled = kernel * np.sqrt(np.asarray(variances) / spread)
    return params | {"encoder": {networks.HEAD: head | {"mean_kernel": jnp.asarray(scaled, jnp.float32),
                                                        "mean_bias": jnp.asarray(-bias @ scaled, jnp.float32)}}}

  assert evaluators[1](with_variances([1.05e-2, 0.95e-2]))["active_units"] == 1
  assert evaluators[1](with_variances([1.05e-2, 1.1e-2]))["active_units"] == 2


def test_chunked_log_mean_exp_masks_the_partial_chunk_exactly():
  rows = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)) * 30.0, jnp.float32)
  # Chunks of 4 with k = 10: [r0..r3], [r0..r3], [r0, r1] (the last two rows of the third chunk masked).
  result = likelihood.log_mean_exp_in_chunks(lambda key, n: rows, jax.random.key(0), 10, 4, 3)
  brute_force = jax.nn.logsumexp(jnp.concatenate([rows, rows, rows[:2]]), axis=0) - math.log(10)
  np.testing.assert_allclose(result, brute_force, rtol=1e-6)


def _tiny_bernoulli_vae(objective="iwae", num_samples=5):
  config = vae.VAEConfig(architecture="mlp", hidden_sizes=(8,), latent_dim=3, activation="tanh",
                         objective=objective, num_importance_samples=num_samples)
  model = latent_code.build_model(config, (2, 3, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, 3, 1)), jax.random.key(1))["params"]
  x = (jax.random.uniform(jax.random.key(2), (4, 2, 3, 1)) < 0.4).astype(jnp.float32)
  return model, config, params, x


def test_l1_equals_the_elbo_on_the_same_samples():
  model, config, params, x = _tiny_bernoulli_vae(num_samples=1)

  @jax.jit
  def bound_and_by_hand(key):
    log_weights, recon, _ = vae.per_example_terms(model, params, x, key, None, config, num_samples=1)
    # The same z by hand: log p(x|z) + log p(z) − log q(z|x) is the single-sample ELBO, and L_1 is it.
    mean, log_variance = model.apply({"params": params}, x, method="encode")
    z = objectives.reparameterize(key, mean, log_variance, num_samples=1)[0]
    logits = model.apply({"params": params}, z, method="decode")
    log_px_given_z = objectives.log_likelihood("bernoulli", logits, x)
    single_sample_elbo = (log_px_given_z + objectives.standard_normal_log_density(z)
                          - objectives.gaussian_log_density(z, mean, log_variance))
    return objectives.importance_weighted_bound(log_weights), single_sample_elbo, recon, log_px_given_z

  bound, single_sample_elbo, recon, log_px_given_z = bound_and_by_hand(jax.random.key(3))
  np.testing.assert_allclose(bound, single_sample_elbo, atol=1e-4)
  np.testing.assert_allclose(recon, log_px_given_z, atol=1e-4)

  # With the closed-form KL the two differ per draw but agree in expectation: over 20000 draws the mean
  # of log p(z) − log q(z|x) (= log w − log p(x|z)) is −KL within 4 standard errors.
  @jax.jit
  def log_ratio_and_kl(key):
    encode, log_weight_terms, _, _ = vae.latent_variable_functions(model, config)
    encoded = encode(params, x, None)
    _, log_prior, log_posterior = log_weight_terms(params, encoded, x, None, key, 20000)
    return log_prior - log_posterior, objectives.kl_to_standard_normal(*encoded[:2])  # (mean, log-variance)

  log_ratio, kl = log_ratio_and_kl(jax.random.key(3))
  standard_error = jnp.std(log_ratio, axis=0) / math.sqrt(log_ratio.shape[0])
  assert np.all(np.abs(jnp.mean(log_ratio, axis=0) + kl) < 4 * standard_error)


def test_bound_does_not_decrease_with_k_in_expectation():
  model, config, params, x = _tiny_bernoulli_vae()
  log_weights, _, _ = jax.jit(lambda p: vae.per_example_terms(model, p, x, jax.random.key(4), None, config,
                                                               num_samples=64 * 4000))(params)
  log_weights = log_weights.reshape(4000, 64, -1)  # 4000 independent replicates of 64 samples.
  expectations, errors = [], []
  for k in (1, 2, 4, 16, 64):
    bounds = jnp.mean(objectives.importance_weighted_bound(jnp.moveaxis(log_weights[:, :k], 1, 0)), axis=-1)
    expectations.append(float(jnp.mean(bounds)))
    errors.append(float(jnp.std(bounds)) / math.sqrt(len(bounds)))
  for (low, low_error), (high, high_error) in zip(zip(expectations, errors), zip(expectations[1:], errors[1:])):
    assert high > low - 3 * math.hypot(low_error, high_error), expectations
  # And it does grow: an untrained encoder's q is far from p(z|x), so L_64 is clearly above L_1 (a bound that
  # averaged log w instead of log-mean-exp-ing it would stay at the ELBO for every k).
  assert expectations[-1] - expectations[0] > 10 * math.hypot(errors[0], errors[-1]), (expectations, errors)


def _iwae_loss(params, model, config, x, key):
  """The loss train_step differentiates for --objective=iwae."""
  return objectives.iwae_terms(
      *vae.per_example_terms(model, params, x, key, None, config, config.num_importance_samples))[0]


def test_iwae_gradient_matches_finite_differences_and_the_weighted_formula():
  model, config, params, x = _tiny_bernoulli_vae(num_samples=5)
  key = jax.random.key(5)
  loss = functools.partial(_iwae_loss, model=model, config=config, x=x, key=key)
  log_weights_fn = lambda p: vae.per_example_terms(model, p, x, key, None, config, 5)[0]
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  rng = np.random.default_rng(0)
  directions = rng.normal(size=(3, flat.size)).astype(np.float32)
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  step = 1e-2

  @jax.jit
  def everything(flat):
    gradient = jax.grad(lambda f: loss(unravel(f)))(flat)
    shifted = jnp.concatenate([flat + step * directions, flat - step * directions])
    losses = jax.vmap(lambda f: loss(unravel(f)))(shifted)
    # Burda et al., Eq. 14: ∇L_k = Σ_i w̃_i ∇log w_i with normalised weights w̃, none detached or dropped.
    normalised = jax.nn.softmax(log_weights_fn(unravel(flat)), axis=0)
    jacobian = jax.jacobian(lambda f: log_weights_fn(unravel(f)))(flat)
    formula = -jnp.einsum("kb,kbp->p", normalised, jacobian) / x.shape[0]
    return gradient, losses, formula

  gradient, losses, formula = everything(flat)
  numeric = (losses[:3] - losses[3:]) / (2 * step)
  np.testing.assert_allclose(directions @ np.asarray(gradient), numeric, atol=2e-3, rtol=2e-3)
  np.testing.assert_allclose(gradient, formula, atol=1e-5)


def test_bits_per_dim_and_active_units():
  assert likelihood.bits_per_dim(-784 * math.log(2.0), 784) == pytest.approx(1.0)
  rng = np.random.default_rng(0)
  means = np.stack([rng.normal(size=1000), 0.05 * rng.normal(size=1000), np.full(1000, 3.0)], axis=1)
  # Variances 1, 0.0025 and 0 over x: only the first unit passes Burda et al.'s 1e-2.
  assert likelihood.count_active_units(means.sum(0), (means**2).sum(0), 1000) == 1


def test_iwae_learning_rate_schedule_has_3_to_the_i_epoch_stages():
  schedule = optim.iwae_schedule(1e-3, steps_per_epoch=10)
  stage_starts = np.cumsum([0] + [3**i for i in range(8)]) * 10  # In steps: 0, 10, 40, 130, ...
  for stage, start in enumerate(stage_starts[:8]):
    assert float(schedule(start)) == pytest.approx(1e-3 * 10**(-stage / 7), rel=1e-5)
    assert float(schedule(stage_starts[stage + 1] - 1)) == pytest.approx(1e-3 * 10**(-stage / 7), rel=1e-5)
  assert float(schedule(10**7)) == pytest.approx(1e-4, rel=1e-5)


def test_two_layer_flagfile_run_then_evaluate_from_checkpoint(tmp_path):
  workdir = str(tmp_path / "iwae2")
  result = run_experiment(
      "vae", "--flagfile=experiments/configs/iwae_mnist_2layer.cfg", f"--workdir={workdir}",
      "--dataset=fashion_mnist", "--num_train_examples=200", "--num_test_examples=100", "--num_epochs=1",
      "--hidden_sizes=16", "--latent_dim=4", "--top_hidden_sizes=8", "--top_latent_dim=2",
      "--num_importance_samples=3", "--final_iwae_k=20", "--log_every_steps=10", "--steps_per_dispatch=10",
      "--num_samples=8", "--num_images=8")
  assert result.returncode == 0, result.stderr
  final = [row for row in plots.read_metrics(workdir) if row["split"] == "test"][-1]
  assert final["step"] == 10 and final["iwae_k"] == 20 and final["active_units_1"] <= 4
  assert final["log_likelihood"] >= final["elbo"] - 2.0  # L_20 ≥ ELBO up to the estimates' noise.
  assert final["bits_per_dim"] == pytest.approx(-final["log_likelihood"] / (784 * math.log(2)))
  # On demand from the checkpoint (gen_jax.load_run): the same k reproduces the final row's number ...
  started = time.time()
  run = gen_jax.load_run(workdir)
  assert (run.family, run.step, run.config.architecture) == ("vae", 10, "two_layer")
  row, appended = run.append_test_row(run.test_log_likelihood(20), started)
  assert appended
  assert not run.append_test_row(run.test_log_likelihood(20), started)[1]  # The same row is written once.
  assert row["step"] == 10 and row["examples_seen"] == final["examples_seen"] and row["iwae_k"] == 20
  assert row["log_likelihood"] == pytest.approx(final["log_likelihood"], abs=1e-3)
  # ... and scripts/evaluate.py, the same from the command line, adds a row for another k.
  evaluate = [sys.executable, "scripts/evaluate.py", f"--workdir={workdir}"]
  result = subprocess.run(evaluate + ["--iwae_k=7"], capture_output=True, text=True, cwd=REPO, timeout=240)
  assert result.returncode == 0, result.stderr
  assert "step=10" in result.stdout and "iwae_k=7" in result.stdout
  rows = [r for r in plots.read_metrics(workdir) if "log_likelihood" in r]
  assert sorted(r["iwae_k"] for r in rows) == [7, 20, 20]
  refused = subprocess.run(evaluate + ["--iwae_k=0"], capture_output=True, text=True, cwd=REPO, timeout=240)
  assert refused.returncode == 2
  assert_one_line_error(refused, "--iwae_k=0", "allowed: a positive number")


def test_two_layer_log_weights_are_the_direct_sum_of_its_five_densities():
  """Burda et al.'s two stochastic layers, bottom-up q(h1|x) q(h2|h1), top-down p(h2) p(h1|h2) p(x|h1): the
  log-weights of `per_example_terms` against the five densities written out in float64 at the same draws."""
  config = vae.Config(architecture="two_layer", hidden_sizes=(5,), latent_dim=2, top_hidden_sizes=(4,),
                      top_latent_dim=1, activation="tanh")
  model = latent_code.build_model(config, (2, 2, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)), jax.random.key(1))["params"]
  x = jnp.asarray([[[[1.0], [0.0]], [[1.0], [1.0]]], [[[0.0], [0.0]], [[0.0], [1.0]]]])
  key = jax.random.key(2)
  log_weights, _, _ = vae.per_example_terms(model, params, x, key, None, config, num_samples=3)

  def apply(method, *args):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), model.apply({"params": params}, *args, method=method))

  def log_normal(z, mean, log_variance):
    return np.sum(-0.5 * (math.log(2 * math.pi) + log_variance + (z - mean)**2 / np.exp(log_variance)), axis=-1)

  # The draws log_weight_terms makes: h1 from q(h1|x) with the first key, h2 from q(h2|h1) with the second.
  bottom_key, top_key = jax.random.split(key)
  bottom_mean, bottom_log_variance = model.apply({"params": params}, x, method="encode_bottom")
  h1 = objectives.reparameterize(bottom_key, bottom_mean, bottom_log_variance, num_samples=3)
  top_mean, top_log_variance = model.apply({"params": params}, h1, method="encode_top")
  h2 = objectives.reparameterize(top_key, top_mean, top_log_variance)
  prior_mean, prior_log_variance = apply(lambda m, h: hierarchical._over_leading_axes(m.top_decoder, h), h2)
  logits = apply(lambda m, h: m.bottom_decoder(h), h1).reshape(3, 2, -1)
  pixels = np.asarray(x, np.float64).reshape(2, -1)
  h1, h2 = np.asarray(h1, np.float64), np.asarray(h2, np.float64)
  direct = (np.sum(pixels * -np.logaddexp(0, -logits) + (1 - pixels) * -np.logaddexp(0, logits), axis=-1)
            + log_normal(h2, 0.0, 0.0) + log_normal(h1, prior_mean, prior_log_variance)
            - log_normal(h1, np.asarray(bottom_mean, np.float64), np.asarray(bottom_log_variance, np.float64))
            - log_normal(h2, np.asarray(top_mean, np.float64), np.asarray(top_log_variance, np.float64)))
  np.testing.assert_allclose(np.asarray(log_weights), direct, atol=1e-4)


def test_split_evaluator_masks_the_padding_of_its_last_chunk():
  """7 images in chunks of 3: the last chunk is padded with two rows the mask must keep out of every sum,
  and the mean divides by 7. Chunk i's key is fold_in(key, i): evaluating twice gives the same numbers."""
  from gen_jax.evaluation import chunked
  images = (np.arange(7 * 4, dtype=np.uint8).reshape(7, 2, 2, 1) * 9)

  def sums_fn(params, x, labels, mask, key):
    del labels
    per_image = jnp.mean(x, axis=(1, 2, 3)) * params["scale"]
    noise = jax.random.uniform(key, mask.shape)
    return {"pixel": jnp.sum(per_image * mask), "noise": jnp.sum(noise * mask)}

  evaluate = chunked.make_split_evaluator(sums_fn, images, None, 3, parallel.make_mesh(), jax.random.key(5))
  first, second = evaluate({"scale": 2.0}), evaluate({"scale": 2.0})
  assert first == second
  assert first["pixel"] == pytest.approx(2.0 * float(np.mean(images / 255.0)), rel=1e-6)
  noise = [np.asarray(jax.random.uniform(jax.random.fold_in(jax.random.key(5), chunk), (3,)))[:rows]
           for chunk, rows in enumerate((3, 3, 1))]
  assert first["noise"] == pytest.approx(float(np.concatenate(noise).mean()), rel=1e-6)


def test_map_in_chunks_calls_in_matching_chunks_and_concatenates_in_order():
  """7 rows in chunks of 3: calls of 3, 3 and 1 rows, the second input chunked alike and None passed as None;
  numpy on the host, and inside jit (traced) the same numbers as a jax array."""
  from gen_jax.evaluation import chunked
  x, y = np.arange(14.0).reshape(7, 2), np.arange(7) * 10
  calls = []

  def function(x_chunk, y_chunk, nothing):
    calls.append((len(x_chunk), None if y_chunk is None else np.asarray(y_chunk).tolist(), nothing))
    return x_chunk.sum(axis=1) + (0 if y_chunk is None else y_chunk)

  out = chunked.map_in_chunks(function, 3, x, y, None)
  assert isinstance(out, np.ndarray) and out.tolist() == (x.sum(axis=1) + y).tolist()
  assert calls == [(3, [0, 10, 20], None), (3, [30, 40, 50], None), (1, [60], None)]
  traced = jax.jit(lambda x: chunked.map_in_chunks(lambda rows: rows * 2, 3, x, traced=True))(jnp.asarray(x))
  assert isinstance(traced, jax.Array)
  np.testing.assert_array_equal(np.asarray(traced), chunked.map_in_chunks(lambda rows: rows * 2, 3, x))


def test_salted_keys_are_distinct_streams():
  """key_for(seed, salt) is fold_in(key(seed), salt), and no two named salts share a value (a collision
  would make two streams draw the same numbers)."""
  from gen_jax import salts
  named = {name: value for name, value in vars(salts).items() if name.isupper()}
  assert len(set(named.values())) == len(named) > 5
  np.testing.assert_array_equal(jax.random.key_data(salts.key_for(3, salts.EVALUATION)),
                                jax.random.key_data(jax.random.fold_in(jax.random.key(3), 0xE7A1)))
  assert not np.array_equal(jax.random.key_data(salts.key_for(3, salts.EVALUATION)),
                            jax.random.key_data(salts.key_for(4, salts.EVALUATION)))


def test_log_variance_clamp_pins_the_encoders_log_variance_to_its_range():
  """The VampPrior models' hard tanh on log σ²: values beyond [−6, 2] sit at the bound, with zero gradient."""
  values = jnp.asarray([-100.0, -6.5, -3.0, 1.5, 100.0])
  clamped = networks.clamp_log_variance(values, (-6.0, 2.0))
  np.testing.assert_array_equal(np.asarray(clamped), [-6.0, -6.0, -3.0, 1.5, 2.0])
  gradient = jax.grad(lambda v: jnp.sum(networks.clamp_log_variance(v, (-6.0, 2.0))))(values)
  np.testing.assert_array_equal(np.asarray(gradient), [0.0, 0.0, 1.0, 1.0, 0.0])
  assert networks.clamp_log_variance(values, ()) is values  # No range: untouched.
