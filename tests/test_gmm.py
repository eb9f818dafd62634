"""The EM mixture baseline: exact component densities, a never-decreasing EM objective, the workdir run."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.models import mixture as gmm

from conftest import assert_one_line_error, finish, run_experiment, start_experiment


def _data(likelihood):
  """Three well-separated clusters in 12 dimensions, binary or continuous, in 3 chunks of 40 (last padded)."""
  rng = np.random.default_rng(0)
  centres = rng.random((3, 12))
  labels = rng.integers(0, 3, size=100)
  if likelihood == "bernoulli":
    x = (rng.random((100, 12)) < centres[labels]).astype(np.float32)
  else:
    x = (centres[labels] + 0.1 * rng.normal(size=(100, 12))).astype(np.float32)
  padded = np.zeros((120, 12), np.float32)
  padded[:100] = x
  weights = np.zeros(120, np.float32)
  weights[:100] = 1.0
  return x, padded.reshape(3, 40, 12), weights.reshape(3, 40)


@pytest.mark.parametrize("likelihood", list(gmm.LIKELIHOODS))
def test_component_densities_match_brute_force(likelihood):
  x, _, _ = _data(likelihood)
  state = gmm.initialize(jax.random.key(0), jnp.asarray(x), 4, likelihood)
  got = np.asarray(gmm.component_log_densities(state, jnp.asarray(x[:5]), likelihood))
  mu, var = np.asarray(state.means, np.float64), np.asarray(state.variances, np.float64)
  for n in range(5):
    for k in range(4):
      if likelihood == "bernoulli":
        want = np.sum(x[n] * np.log(mu[k]) + (1 - x[n]) * np.log(1 - mu[k]))
      else:
        want = np.sum(-0.5 * (math.log(2 * math.pi) + np.log(var[k]) + (x[n] - mu[k])**2 / var[k]))
      assert got[n, k] == pytest.approx(want, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("likelihood", list(gmm.LIKELIHOODS))
def test_em_objective_never_decreases(likelihood):
  x, chunks, weights = _data(likelihood)
  # The prior strength is traced, not static: one compilation serves both strengths.
  step = jax.jit(lambda s, c: gmm.em_step(s, chunks, weights, c, likelihood))
  for pseudo_count in (1.0, 1e-3):
    _check_monotone(step, gmm.initialize(jax.random.key(1), jnp.asarray(x), 5, likelihood), pseudo_count, x,
                    likelihood)


@pytest.mark.parametrize("likelihood", list(gmm.LIKELIHOODS))
def test_the_start_is_the_datas_prior_and_distinct_data_points(likelihood):
  """From the data alone: the prior's centre m ((Σx + 1)/(N + 2) for Bernoulli pixels, the mean for Gaussian
  ones) and spread v = Var x + 1e-3, π uniform, σ² = v, and each μ_k one of K distinct data points, pulled
  half-way to clip(m, 0.05, 0.95) for Bernoulli pixels (a pixel never on and one always on exercise the clip)."""
  x, _, _ = _data(likelihood)
  if likelihood == "bernoulli":
    x = np.concatenate([x, np.zeros((100, 1), np.float32), np.ones((100, 1), np.float32)], axis=1)
  state = gmm.initialize(jax.random.key(2), jnp.asarray(x), 4, likelihood)
  xd = x.astype(np.float64)
  centre = {"bernoulli": (xd.sum(0) + 1) / (len(x) + 2), "gaussian": xd.mean(0)}[likelihood]
  np.testing.assert_allclose(np.asarray(state.prior_means), centre, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(state.prior_variances), xd.var(0) + 1e-3, rtol=1e-4)
  np.testing.assert_allclose(np.exp(np.asarray(state.log_mixing, np.float64)), 0.25, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(state.variances), np.broadcast_to(xd.var(0) + 1e-3, (4, x.shape[1])),
                             rtol=1e-4)
  starts = {"bernoulli": 0.5 * xd + 0.5 * np.clip(centre, 0.05, 0.95), "gaussian": xd}[likelihood]
  picked = [int(np.argmin(np.abs(starts - mean).max(axis=1))) for mean in np.asarray(state.means, np.float64)]
  np.testing.assert_allclose(np.asarray(state.means), starts[picked], atol=1e-6)
  if likelihood == "gaussian":  # Continuous rows are all different, so the picks' indices show.
    assert len(set(picked)) == 4


@pytest.mark.parametrize("likelihood", list(gmm.LIKELIHOODS))
def test_one_em_step_is_the_map_update_of_the_module_docstring(likelihood):
  """Responsibilities and the MAP formulas written out in float64 on the 100 real rows, against em_step on
  the padded chunks: π, μ, σ² and the reported log-likelihood."""
  x, chunks, weights = _data(likelihood)
  state = gmm.initialize(jax.random.key(2), jnp.asarray(x), 4, likelihood)
  c = 0.5
  new, metrics = gmm.em_step(state, chunks, weights, c, likelihood)
  log_pi = np.asarray(state.log_mixing, np.float64)
  mu, var = np.asarray(state.means, np.float64), np.asarray(state.variances, np.float64)
  m, v = np.asarray(state.prior_means, np.float64), np.asarray(state.prior_variances, np.float64)
  xd = x.astype(np.float64)
  if likelihood == "bernoulli":
    log_px_k = xd @ np.log(mu).T + (1 - xd) @ np.log1p(-mu).T
  else:
    log_px_k = -0.5 * (((xd[:, None, :] - mu[None])**2 / var[None]) + np.log(2 * np.pi * var[None])).sum(-1)
  joint = log_pi + log_px_k
  log_px = np.logaddexp.reduce(joint, axis=1)
  r = np.exp(joint - log_px[:, None])
  n_k = r.sum(0)
  want_pi = (n_k + c) / (len(x) + 4 * c)
  want_mu = (r.T @ xd + c * m) / (n_k[:, None] + c)
  np.testing.assert_allclose(np.exp(np.asarray(new.log_mixing)), want_pi, rtol=1e-5)
  assert np.exp(np.asarray(new.log_mixing, np.float64)).sum() == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(np.asarray(new.means), want_mu, rtol=1e-4, atol=1e-6)
  if likelihood == "gaussian":
    deviations = (r[:, :, None] * (xd[:, None, :] - want_mu[None])**2).sum(0)
    want_var = (deviations + c * (want_mu - m)**2 + c * v) / (n_k[:, None] + c)
    np.testing.assert_allclose(np.asarray(new.variances), want_var, rtol=1e-3, atol=1e-6)
  else:
    np.testing.assert_array_equal(np.asarray(new.variances), var.astype(np.float32))
  assert float(metrics["log_likelihood"]) == pytest.approx(log_px.mean(), rel=1e-5)


def _check_monotone(step, state, pseudo_count, x, likelihood):
  objectives, log_likelihoods = [], []
  for _ in range(25):
    state, metrics = step(state, pseudo_count)
    objectives.append(float(metrics["objective"]))
    log_likelihoods.append(float(metrics["log_likelihood"]))
  # MAP-EM's objective (log-likelihood + log prior) never decreases, up to float32 rounding.
  assert all(b >= a - 1e-4 * abs(a) for a, b in zip(objectives, objectives[1:])), objectives
  assert objectives[-1] > objectives[0] + 1.0
  if pseudo_count < 0.01:  # A negligible prior: the log-likelihood itself climbs monotonically too.
    assert all(b >= a - 1e-3 for a, b in zip(log_likelihoods, log_likelihoods[1:])), log_likelihoods
  # The padded rows counted nowhere: the reported mean is over the 100 real examples.
  exact = float(jnp.mean(gmm.log_likelihood(state, jnp.asarray(x), likelihood)))
  _, metrics = step(state, pseudo_count)
  assert float(metrics["log_likelihood"]) == pytest.approx(exact, rel=1e-5)


def test_gmm_experiment_writes_test_log_likelihood(tmp_path):
  workdir = str(tmp_path / "gmm")
  bad = start_experiment("gmm", f"--workdir={tmp_path / 'bad'}", "--num_components=0")  # Runs alongside.
  result = run_experiment("gmm", "--flagfile=experiments/configs/gmm_fashion_mnist.cfg", f"--workdir={workdir}",
                          "--num_components=3", "--num_epochs=4", "--eval_every_steps=2",
                          "--num_train_examples=300", "--num_test_examples=100", "--num_samples=10")
  assert result.returncode == 0, result.stderr
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  train = [row for row in rows if row["split"] == "train"]
  test = [row for row in rows if row["split"] == "test"]
  assert [row["step"] for row in train] == [1, 2, 3, 4] and [row["step"] for row in test] == [2, 4]
  assert all(b["objective"] >= a["objective"] - 1e-3 for a, b in zip(train, train[1:]))
  assert test[-1]["log_likelihood"] < 0 and test[-1]["bits_per_dim"] == pytest.approx(
      -test[-1]["log_likelihood"] / (784 * math.log(2)))
  assert np.load(os.path.join(workdir, "samples.npy")).shape == (10, 28, 28, 1)
  assert_one_line_error(finish(bad), "--num_components=0")


def test_pixels_constant_across_the_data_keep_em_finite_and_exact():
  """White backgrounds: a binary pixel on in all 10,000 images puts its MAP μ within 1e-8 of 1, which float32
  rounds to 1 (log(1 − μ) = −inf, then NaN); a continuous pixel constant at 1 gets σ² ~ 1e-6, where squares
  expanded around 0 cancel terms of ~1e6. Both stay finite, and the Gaussian's densities match float64."""
  rng = np.random.default_rng(3)
  binary = (rng.random((10000, 6)) < 0.5).astype(np.float32)
  binary[:, 0] = 1.0
  state = gmm.initialize(jax.random.key(0), jnp.asarray(binary), 2, "bernoulli")
  for _ in range(3):
    state, metrics = gmm.em_step(state, jnp.asarray(binary).reshape(10, 1000, 6), jnp.ones((10, 1000)), 1.0,
                                 "bernoulli")
  assert np.isfinite(float(metrics["objective"])) and float(jnp.max(state.means)) < 1.0

  continuous = rng.random((4000, 8)).astype(np.float32)
  continuous[:, :4] = 1.0
  state = gmm.initialize(jax.random.key(0), jnp.asarray(continuous), 3, "gaussian")
  for _ in range(2):
    state, _ = gmm.em_step(state, jnp.asarray(continuous).reshape(4, 1000, 8), jnp.ones((4, 1000)), 1.0, "gaussian")
  got = np.asarray(gmm.component_log_densities(state, jnp.asarray(continuous[:50]), "gaussian"))
  mu, var = np.asarray(state.means, np.float64), np.asarray(state.variances, np.float64)
  x = continuous[:50].astype(np.float64)
  want = -0.5 * (np.log(2 * np.pi * var[None]) + (x[:, None, :] - mu[None])**2 / var[None]).sum(-1)
  assert float(np.min(var)) < 1e-5  # The constant pixels' variances, as small as the prior lets them be.
  np.testing.assert_allclose(got, want, atol=1e-2)
