"""Exact resume for every family (the VAE's is in test_resume_and_scale.py): each run is SIGKILLed during an
evaluation, the image GAN's also during a checkpoint save, resumed by the same command each time, and must end
bit for bit where an uninterrupted run does — parameters, every optimizer state (both of a GAN's, batch-norm
statistics, the EMA generator), metrics rows (timing aside) and samples.npy. Each kill makes the resumed run
replay steps from an earlier checkpoint (the family's data order and keys per step) and redo the family's own
evaluation. A kill during a save is the shared checkpointing code's business, tested for the VAE with every
other fault; the image GAN, whose state has the most parts, repeats it. A kill between steps adds nothing
family-specific either (the VAE's test, with SIGTERM).

Each family's chain of runs is sequential, the families run side by side. Schedule for all: evaluations every
4 steps, checkpoints every 6, dispatches of 2 steps, 16 steps; killed at eval:8 (and save:12)."""

import concurrent.futures

import jax
import numpy as np
import pytest

import gen_jax
from conftest import TINY_DCGAN_FLAGS, run_experiment, untimed_rows
from gen_jax.errors import UserError

SCHEDULE = ("--num_steps=16", "--eval_every_steps=4", "--checkpoint_every_steps=6", "--steps_per_dispatch=2",
            "--log_every_steps=2", "--keep_checkpoints=2")
LATENT_CODE = ("--num_train_examples=256", "--num_test_examples=100", "--eval_batch_size=100", "--batch_size=32",
               "--hidden_sizes=16", "--latent_dim=3", "--num_samples=16", "--num_images=4")
# The tiny DCGAN, evaluated on 8 samples, with an EMA of G (decay 0.9) that moves within 16 steps.
TINY_DCGAN = (*TINY_DCGAN_FLAGS, "--num_samples=8", "--num_eval_samples=8", "--ema_decay=0.9")
RUNS = {
    "cvae": ("cvae", "--flagfile=experiments/configs/cvae_fashion_mnist.cfg", *LATENT_CODE,
             "--conditional_samples_per_class=10"),
    "autoencoder": ("autoencoder", "--flagfile=experiments/configs/autoencoder_fashion_mnist.cfg", *LATENT_CODE),
    "gmm": ("gmm", "--flagfile=experiments/configs/gmm_fashion_mnist.cfg", "--num_components=3",
            "--num_train_examples=256", "--num_test_examples=100", "--num_samples=16"),
    "toy_gan": ("gan", "--flagfile=experiments/configs/gan_ring.cfg", "--g_hidden_sizes=8", "--d_hidden_sizes=8",
                "--num_samples=40", "--num_eval_samples=40", "--ema_decay=0.9", "--d_steps_per_g_step=2"),
    "image_gan": ("gan", "--flagfile=experiments/configs/dcgan_fashion_mnist.cfg", *TINY_DCGAN),
    # The GAN again, self-conditioned: its k-means clusters are recomputed at every start and must come out the
    # same, or the resumed run would train on other labels.
    "self_conditioned_gan": ("gan", "--flagfile=experiments/configs/dcgan_self_conditioned_fashion_mnist.cfg",
                             *TINY_DCGAN, "--num_clusters=5"),
}
# What kills each family's run: during an evaluation; the image GAN also during a save.
FAULTS = {name: ("eval:8", "save:12") if name == "image_gan" else ("eval:8",) for name in RUNS}


def _state_leaves(workdir):
  run = gen_jax.load_run(str(workdir))
  assert run.step == 16
  return [(jax.tree_util.keystr(path), np.asarray(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(run.state)]


def _straight_and_interrupted(name, root, extra):
  module, *flags = RUNS[name]
  flags = [*flags, *SCHEDULE, *extra]
  straight = run_experiment(module, *flags, f"--workdir={root / name / 'straight'}")
  assert straight.returncode == 0, (name, straight.stderr[-2000:])
  for fault in FAULTS[name]:
    killed = run_experiment(module, *flags, f"--workdir={root / name / 'interrupted'}", env={"GEN_JAX_FAULT": fault})
    assert killed.returncode == -9, (name, fault, killed.stderr[-2000:])
  finished = run_experiment(module, *flags, f"--workdir={root / name / 'interrupted'}")
  assert finished.returncode == 0, (name, finished.stderr[-2000:])
  return root / name / "straight", root / name / "interrupted"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_classifier):
  root = tmp_path_factory.mktemp("resume")
  classifier = small_classifier[0]
  extra = {name: () for name in RUNS} | {"cvae": (f"--classifier={classifier.checkpoint_dir}",)}
  with concurrent.futures.ThreadPoolExecutor(len(RUNS)) as pool:
    futures = {name: pool.submit(_straight_and_interrupted, name, root, extra[name]) for name in RUNS}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(RUNS))
def test_a_killed_run_ends_bit_for_bit_where_an_uninterrupted_one_does(runs, name):
  straight, interrupted = runs[name]
  assert untimed_rows(interrupted) == untimed_rows(straight)
  for (path, resumed), (_, uninterrupted) in zip(_state_leaves(interrupted), _state_leaves(straight)):
    np.testing.assert_array_equal(resumed, uninterrupted, err_msg=f"{name} {path}")
  np.testing.assert_array_equal(np.load(interrupted / "samples.npy"), np.load(straight / "samples.npy"))


@pytest.mark.parametrize("name, operation", [("cvae", "sample"), ("autoencoder", "encode"),
                                             ("gmm", "log_likelihood"), ("toy_gan", "sample"),
                                             ("image_gan", "sample")])
def test_labels_a_run_cannot_use_are_refused_not_ignored(runs, name, operation):
  run = gen_jax.load_run(str(runs[name][0]))
  images = np.zeros((2, 28, 28, 1), np.float32)
  call = {"sample": lambda labels: run.sample(2, labels=labels),
          "encode": lambda labels: run.encode(images, labels=labels),
          "log_likelihood": lambda labels: run.log_likelihood(images, k=2, labels=labels)}[operation]
  if name == "cvae":  # Classes 0..9: one outside them.
    with pytest.raises(UserError, match=r"\[0, 99\] \(2 of them\) for 2 outputs; allowed: 2 classes in 0\.\.9"):
      call([0, 99])
  else:  # No classes at all: any labels would be ignored without a word.
    with pytest.raises(UserError, match=r"\[0, 1\] \(2 of them\) for a model without classes; allowed: no labels"):
      call([0, 1])


def test_images_counts_and_seeds_a_run_cannot_take_are_refused_in_one_line(runs):
  """Images of another shape or range would be scored or encoded as something they are not (a missing channel
  axis read as 28 images one pixel wide, floats in 0..255 as probabilities, grey pixels as bits): refused,
  except (N, H, W) for one channel, which is the same images."""
  gmm_run = gen_jax.load_run(str(runs["gmm"][0]))  # Binarised: its likelihood is of bits.
  autoencoder_run = gen_jax.load_run(str(runs["autoencoder"][0]))
  bits = gmm_run.dataset.test_images[:3]
  np.testing.assert_array_equal(gmm_run.log_likelihood(bits[..., 0], k=1), gmm_run.log_likelihood(bits, k=1))
  np.testing.assert_array_equal(autoencoder_run.encode(bits[..., 0]), autoencoder_run.encode(bits))
  grey = np.full((2, 28, 28, 1), 128, np.uint8)
  autoencoder_run.encode(grey)  # Any pixels encode.
  refusals = [
      (lambda: autoencoder_run.encode(bits.reshape(3, -1)),
       r"images of shape \(3, 784\); allowed: \(N, 28, 28, 1\) or \(N, 28, 28\) with N >= 1"),
      (lambda: autoencoder_run.reconstruct(np.zeros((0, 28, 28, 1), np.uint8)), r"images of shape \(0, 28, 28, 1\)"),
      (lambda: autoencoder_run.encode(bits.astype(np.float32)),
       r"float32 images with values in \[0.0, 255.0\]; allowed: uint8 in 0..255 or floats in \[0, 1\]"),
      (lambda: gmm_run.log_likelihood(grey, k=1),
       r"images with values between 0 and 255 for a run that binarises, whose likelihood is of bits"),
      (lambda: gmm_run.log_likelihood(bits, k=0), r"k=0; allowed: an integer >= 1 \(importance samples per image\)"),
      (lambda: gmm_run.test_log_likelihood(k=2.5), r"k=2.5; allowed: an integer >= 1"),
      (lambda: gmm_run.sample(0), r"n=0; allowed: an integer >= 1 \(the number of samples\)"),
      (lambda: autoencoder_run.decode(np.zeros((3, 5))), r"codes of shape \(3, 5\); allowed: \(N, 3\) with N >= 1"),
      (lambda: gmm_run.sample(2, seed=-1), r"seed=-1; allowed: an integer in 0\.\.\d+ \(a seed\)"),
      (lambda: gmm_run.sample(2, seed=2**40), r"seed=1099511627776; allowed: an integer in 0\.\."),
  ]
  for call, message in refusals:
    with pytest.raises(UserError, match=message):
      call()
