"""The DCGAN flagfile's training step in PyTorch, for scripts/benchmark.py's side-by-side figure.

  PYTORCH_PYTHON=/path/to/venv-with-torch/bin/python .venv/bin/python scripts/benchmark.py

PyTorch is not a dependency of gen_jax: this script runs in a scratch environment that has it (say
`python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy`) and prints one number,
examples/s (with --bfloat16 the step runs under torch.autocast to bfloat16, to set beside gen_jax's
--compute_dtype=bfloat16). The architecture and step are those of experiments/configs/dcgan_fashion_mnist.cfg:
G = dense 100 -> 7·7·128, batch norm, ReLU, 4×4 stride-2 transposed convolution to 64 maps, batch norm, ReLU, 4×4
stride-2 transposed convolution to one map, tanh; D = 4×4 stride-2 convolution to 64 maps, LeakyReLU 0.2,
to 128 maps, batch norm, LeakyReLU, dense to one logit; the non-saturating loss; Adam 2e-4, β1 0.5; batch
64; one D step on a real batch and fresh fakes (no gradient into G), then one G step with D frozen (no
weight gradients for D). The batches are random images in [−1, 1], drawn before timing (the JAX side
gathers its batches from the dataset inside the step, which costs it a little).
"""

import argparse
import time

import torch
from torch import nn


def networks(latent_dim=100):
  generator = nn.Sequential(
      nn.Linear(latent_dim, 7 * 7 * 128), nn.BatchNorm1d(7 * 7 * 128), nn.ReLU(), nn.Unflatten(1, (128, 7, 7)),
      nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
      nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())
  discriminator = nn.Sequential(
      nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
      nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
      nn.Flatten(), nn.Linear(7 * 7 * 128, 1))
  return generator, discriminator


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--warmup_steps", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--bfloat16", action="store_true",
                      help="Mixed precision: the step under torch.autocast to bfloat16, parameters float32.")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  generator, discriminator = networks()
  d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
  g_optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
  loss = nn.BCEWithLogitsLoss()
  batches = torch.rand(args.warmup_steps + args.steps, args.batch_size, 1, 28, 28) * 2 - 1
  ones, zeros = torch.ones(args.batch_size, 1), torch.zeros(args.batch_size, 1)

  def step(real):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bfloat16):
      train(real)

  def train(real):
    fake = generator(torch.randn(args.batch_size, 100)).detach()
    d_loss = loss(discriminator(real), ones) + loss(discriminator(fake), zeros)
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()
    discriminator.requires_grad_(False)
    g_loss = loss(discriminator(generator(torch.randn(args.batch_size, 100))), ones)
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()
    discriminator.requires_grad_(True)

  for index in range(args.warmup_steps):
    step(batches[index])
  start = time.perf_counter()
  for index in range(args.warmup_steps, args.warmup_steps + args.steps):
    step(batches[index])
  print(args.steps * args.batch_size / (time.perf_counter() - start))


if __name__ == "__main__":
  main()
