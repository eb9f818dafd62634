"""Throughput against the matmul roofline, measured on this machine.

  .venv/bin/python scripts/benchmark.py [--steps_per_dispatch=64] [--dispatches=20]

1. The machine's fp32 matmul rate (a large square matmul, the roofline) and the rate of the model's own
   first-layer matmul shape (128×784 by 784×400).
2. Training throughput of the `vae_pytorch_example` protocol (784-400-20 ReLU, Bernoulli, Adam, batch 128)
   through the same jitted, scanned step the training loop runs, compilation excluded; the matmul FLOPs of
   forward and backward counted layer by layer; the fraction of the roofline reached; the implied epoch time.
3. The k=5000 importance-weighted evaluation (scripts/benchmark_iwae.py), where present.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmark_iwae
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # gen_jax

flags.DEFINE_integer("steps_per_dispatch", 64, "Training steps per scanned dispatch.")
flags.DEFINE_integer("dispatches", 20, "Timed dispatches (after one warm-up).")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul that measures the roofline.")
FLAGS = flags.FLAGS


def _best_rate(function, flops, repeats):
  """FLOP/s of the fastest of `repeats` timed calls (the least disturbed by other processes)."""
  import jax
  jax.block_until_ready(function())
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(function())
    best = min(best, time.perf_counter() - start)
  return flops / best


def matmul_rates(size):
  import jax
  import jax.numpy as jnp
  matmul = jax.jit(lambda a, b: a @ b)
  square = jnp.ones((size, size), jnp.float32)
  peak = _best_rate(lambda: matmul(square, square), 2 * size**3, 10)
  a, b = jnp.ones((128, 784), jnp.float32), jnp.ones((784, 400), jnp.float32)
  # 50 products per timed call, so dispatch overhead doesn't hide the kernel's rate.
  repeated = jax.jit(lambda a, b: jax.lax.fori_loop(0, 50, lambda i, acc: acc + (a + i) @ b,
                                                      jnp.zeros((128, 400))))
  model_shape = _best_rate(lambda: repeated(a, b), 50 * 2 * 128 * 784 * 400, 10)
  return peak, model_shape


def mlp_vae_matmul_flops(batch, image_size, hidden, latent):
  """Matmul FLOPs of one training step: forward 2·B·in·out per dense layer; backward the same for the
  weight gradient and again for the input gradient, except the first layer (the data needs none)."""
  encoder = [(image_size, hidden), (hidden, 2 * latent)]
  decoder = [(latent, hidden), (hidden, image_size)]
  flops = 0
  for index, (fan_in, fan_out) in enumerate(encoder + decoder):
    per_pass = 2 * batch * fan_in * fan_out
    flops += per_pass * (2 if index == 0 else 3)
  return flops


def vae_training_throughput(steps_per_dispatch, dispatches):
  import jax
  import numpy as np
  from gen_jax import parallel
  from gen_jax.families import vae
  from gen_jax.runtime import loop
  config = vae.Config(binarization="none", hidden_sizes=(400,), latent_dim=20, batch_size=128,
                      learning_rate=1e-3, lr_schedule="constant")
  mesh = parallel.make_mesh()
  task = vae.make_task(config, "/tmp/gen_jax_benchmark", mesh)  # Writes nothing: only the task is built.
  data = task.dataset
  state = parallel.replicate_tree(task.init_state(jax.random.key(0)), mesh)
  device_data = parallel.replicate_tree(task.data, mesh)
  run_steps = loop.compile_steps(task, jax.random.key(1))
  sharding = parallel.batch_sharded(mesh, 1)
  inputs = [parallel.global_array(task.step_inputs(i * steps_per_dispatch, steps_per_dispatch), sharding)
            for i in range(dispatches + 1)]
  state, metrics = run_steps(state, device_data, inputs[0])  # Compiles.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for step_inputs in inputs[1:]:
    state, metrics = run_steps(state, device_data, step_inputs)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  examples = dispatches * steps_per_dispatch * config.batch_size
  image_size = int(np.prod(data.image_shape))
  flops_per_step = mlp_vae_matmul_flops(config.batch_size, image_size, 400, 20)
  return {"examples_per_sec": examples / seconds,
          "matmul_flops_per_example": flops_per_step / config.batch_size,
          "epoch_seconds": len(data.train_images) / (examples / seconds)}


def main(argv):
  del argv
  import jax
  print(f"devices: {jax.devices()}")
  peak, model_shape = matmul_rates(FLAGS.matmul_size)
  print(f"matmul roofline ({FLAGS.matmul_size}^2 fp32): {peak / 1e9:.0f} GFLOP/s; "
        f"128x784 @ 784x400: {model_shape / 1e9:.0f} GFLOP/s")
  result = vae_training_throughput(FLAGS.steps_per_dispatch, FLAGS.dispatches)
  achieved = result["examples_per_sec"] * result["matmul_flops_per_example"]
  print(f"vae_pytorch_example training: {result['examples_per_sec']:.0f} examples/s "
        f"({result['epoch_seconds']:.2f} s per Fashion-MNIST epoch), "
        f"{result['matmul_flops_per_example'] / 1e6:.2f} MFLOP/example in matmuls -> "
        f"{achieved / 1e9:.0f} GFLOP/s = {achieved / peak:.0%} of the roofline "
        f"({achieved / model_shape:.0%} of the model-shaped matmul rate)")
  try:
    from benchmark_iwae import iwae_evaluation_benchmark
  except ImportError:
    return
  iwae = iwae_evaluation_benchmark(peak / 1e9)
  print("iwae k=5000 evaluation: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in iwae.items()))


if __name__ == "__main__":
  app.run(main)
