"""Throughput against the matmul roofline, measured on this machine.

  .venv/bin/python scripts/benchmark.py [--steps_per_dispatch=64] [--dispatches=20] [--parts=dcgan,...]

1. The machine's fp32 matmul rate (a large square matmul, the roofline) and the rate of the model's own
   first-layer matmul shape (128×784 by 784×400).
2. Training throughput of the `vae_pytorch_example` protocol (784-400-20 ReLU, Bernoulli, Adam, batch 128)
   through the same jitted, scanned step the training loop runs, compilation excluded; the matmul FLOPs of
   forward and backward counted layer by layer; the fraction of the roofline reached; the implied epoch time.
3. The density table's training steps (experiments/configs/density_vae.cfg: gated 784-300-300-40, batch 100,
   AdamNormGrad), with the Gaussian prior and with the VampPrior (500 pseudo-inputs), their roofline
   fractions and the VampPrior step's time as a multiple of the plain one.
4. The DCGAN flagfile's training step (experiments/configs/dcgan_fashion_mnist.cfg: one D step and one G step
   on batches of 64, one step per dispatch as the flagfile runs it): examples/s, its convolution and dense
   FLOPs counted layer by layer, the roofline fraction; and, with --pytorch_python (a Python that has
   torch), PyTorch's examples/s for the same architecture and step (scripts/pytorch_dcgan.py) in the same run,
   its runs alternating with gen_jax's timed windows.
5. The ConvHVAE's step (experiments/configs/density_convhvae.cfg), examples/s.
   Step 4 also runs with XLA's own convolutions in place of gen_jax's CPU matmul formulation
   (gen_jax.models.convolution), on the CPU, for the before/after figure. Step 5 has no such variant: the
   ConvHVAE's stacks use XLA's nn.Conv (measured faster for them: 61 against 56 examples/s with the patches).
6. The k=5000 importance-weighted evaluation (scripts/benchmark_iwae.py), where present.
"""

import os
import subprocess
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmark_iwae
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # gen_jax, experiments

from gen_jax.errors import UserError  # noqa: E402

flags.DEFINE_integer("steps_per_dispatch", 64, "Training steps per scanned dispatch.")
flags.DEFINE_integer("dispatches", 20, "Timed dispatches (after one warm-up).")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul that measures the roofline.")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                  "The training steps' compute dtype (and the roofline matmul's); parameters stay float32.")
flags.DEFINE_string("pytorch_python", os.environ.get("PYTORCH_PYTHON", ""),
                    "A Python interpreter with torch installed, to time scripts/pytorch_dcgan.py beside the "
                    "DCGAN step (default $PYTORCH_PYTHON; empty: skip).")
FLAGS = flags.FLAGS
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def flagfile_config(family, name, *extra_flags):
  """`family`'s Config as `python -m experiments.<family> --flagfile=experiments/configs/<name>.cfg
  --compute_dtype=... <extra_flags>` builds it: each step is timed with its flagfile's own settings."""
  import contextlib
  from experiments import main as experiment_main
  flag_values = flags.FlagValues()
  experiment_main.define_config_flags(family.Config, family.HELP, flag_values)
  with contextlib.chdir(REPO):  # A flagfile names the flagfiles it builds on from the repository root.
    flag_values(["benchmark", f"--flagfile=experiments/configs/{name}.cfg", f"--compute_dtype={FLAGS.compute_dtype}",
                 *extra_flags])
  return experiment_main.config_from_flags(family.Config, flag_values)


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


def matmul_rates(size, dtype="float32"):
  import jax
  import jax.numpy as jnp
  # Summed in float32, as mixed precision sums: XLA:CPU runs a bfloat16 matmul that way on the CPU's matrix
  # units (AMX, where present), ~7× faster than one with a bfloat16 result; for float32 it changes nothing.
  matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  square = jnp.ones((size, size), dtype)
  peak = _best_rate(lambda: matmul(square, square), 2 * size**3, 10)
  a, b = jnp.ones((128, 784), dtype), jnp.ones((784, 400), dtype)
  # 50 products per timed call, so dispatch overhead doesn't hide the kernel's rate.
  repeated = jax.jit(lambda a, b: jax.lax.fori_loop(0, 50, lambda i, acc: acc + matmul(a + i, b),
                                                      jnp.zeros((128, 400))))
  model_shape = _best_rate(lambda: repeated(a, b), 50 * 2 * 128 * 784 * 400, 10)
  return peak, model_shape


def layer_flops(batch, layers, first_needs_input_gradient=False):
  """Matmul FLOPs of one training step through dense layers (fan_in, fan_out): forward 2·B·in·out; backward
  the same for the weight gradient and again for the input gradient, except the first layer's when its
  input is data (pseudo-inputs are parameters, so theirs is needed)."""
  flops = 0
  for index, (fan_in, fan_out) in enumerate(layers):
    flops += 2 * batch * fan_in * fan_out * (2 if index == 0 and not first_needs_input_gradient else 3)
  return flops


def mlp_vae_matmul_flops(batch, image_size, hidden, latent):
  """The one-hidden-layer MLP VAE's step (encoder then decoder)."""
  return layer_flops(batch, [(image_size, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, image_size)])


def gated_vae_layers(image_size, hidden, latent):
  """(encoder, decoder) layers of the density VAE: two gated layers each way (a gated layer is two matmuls,
  counted as one of twice the width), the encoder's mean and log-variance, the decoder's logits."""
  encoder = [(image_size, 2 * hidden), (hidden, 2 * hidden), (hidden, 2 * latent)]
  decoder = [(latent, 2 * hidden), (hidden, 2 * hidden), (hidden, image_size)]
  return encoder, decoder


def training_window_timer(config, steps_per_dispatch, dispatches_per_window, windows, family=None):
  """(time_window, data) for `config`'s training step as the loop runs it (scanned unless one step per
  dispatch, compiled once, compilation excluded): each call of time_window() runs the next
  `dispatches_per_window` dispatches (at most `windows` calls) and returns their examples/s. `family`: the
  family module (default: the VAE's)."""
  import jax
  from gen_jax import parallel
  from gen_jax.families import vae
  from gen_jax.runtime import loop, run
  mesh = run.prepared_mesh()  # As the loop's: on the CPU, malloc keeps freed memory.
  family = family or vae
  family.validate(config)
  task = family.make_task(config, "/tmp/gen_jax_benchmark", mesh)  # Writes nothing: only the task.
  device_data = parallel.replicate_tree(task.data, mesh)
  run_steps = loop.compile_steps(task, jax.random.key(1))
  sharding = parallel.batch_sharded(mesh, 1)
  inputs = [parallel.global_array(task.step_inputs(i * steps_per_dispatch, steps_per_dispatch), sharding)
            for i in range(dispatches_per_window * windows + 1)]
  carry = run_steps(parallel.replicate_tree(task.init_state(jax.random.key(0)), mesh), device_data, inputs[0])
  jax.block_until_ready(carry)  # Compiled.
  windows_run = 0

  def time_window():
    nonlocal carry, windows_run
    start = time.perf_counter()
    for step_inputs in inputs[1 + windows_run * dispatches_per_window:1 + (windows_run + 1) * dispatches_per_window]:
      carry = run_steps(carry[0], device_data, step_inputs)
    jax.block_until_ready(carry)
    windows_run += 1
    return dispatches_per_window * steps_per_dispatch * config.batch_size / (time.perf_counter() - start)

  return time_window, task.dataset


def training_throughput(config, steps_per_dispatch, dispatches, family=None, windows=3):
  """examples/s of `config`'s training step (see training_window_timer), and its data. The dispatches are
  timed in `windows` consecutive windows and the fastest counts: on a shared machine it is the least
  disturbed one."""
  time_window, data = training_window_timer(config, steps_per_dispatch, max(dispatches // windows, 1), windows,
                                            family)
  return max(time_window() for _ in range(windows)), data


def vae_training_throughput(steps_per_dispatch, dispatches):
  import numpy as np
  from gen_jax.families import vae
  config = flagfile_config(vae, "vae_pytorch_example")
  examples_per_sec, data = training_throughput(config, steps_per_dispatch, dispatches)
  flops_per_step = mlp_vae_matmul_flops(config.batch_size, int(np.prod(data.image_shape)), config.hidden_sizes[0],
                                        config.latent_dim)
  return {"examples_per_sec": examples_per_sec, "matmul_flops_per_example": flops_per_step / config.batch_size,
          "epoch_seconds": len(data.train_images) / examples_per_sec}


def density_step_benchmark(steps_per_dispatch, dispatches, peak, windows=6):
  """The density table's gated-MLP VAE step and its VampPrior step: examples/s, roofline fraction, ratio.

  The two steps' windows alternate (plain, VampPrior, plain, ...) and each step's fastest window counts, so a
  slow spell of a shared machine falls on both and the ratio does not swing with it."""
  from gen_jax.families import vae
  results, timers = {}, {}
  for name, flagfile in [("gaussian", "density_vae"), ("vampprior", "density_vampprior")]:
    config = flagfile_config(vae, flagfile)
    encoder, decoder = gated_vae_layers(784, config.hidden_sizes[0], config.latent_dim)
    prior_flops = layer_flops(config.num_pseudo_inputs, encoder, True) if config.prior == "vampprior" else 0
    timers[name], _ = training_window_timer(config, steps_per_dispatch, max(dispatches // windows, 1), windows)
    results[name] = {"gflop_per_example": (layer_flops(config.batch_size, encoder + decoder) + prior_flops)
                     / config.batch_size / 1e9}
  best = {name: 0.0 for name in timers}
  for _ in range(windows):
    for name, time_window in timers.items():
      best[name] = max(best[name], time_window())
  for name, examples_per_sec in best.items():
    results[name].update(examples_per_sec=examples_per_sec,
                         roofline_fraction=examples_per_sec * results[name]["gflop_per_example"] * 1e9 / peak)
  results["vampprior_step_time_ratio"] = best["gaussian"] / best["vampprior"]
  # What the VampPrior adds (its pseudo-inputs' encoder pass, forward and backward) against the roofline: the
  # rate it ran at, from the two steps' time difference, and the rate 3× the plain step's time would need.
  # The added time also holds Adam's update of the pseudo-inputs and the mixture density, so the first is
  # a lower bound on the matmuls' own rate.
  added_flops_per_example = (results["vampprior"]["gflop_per_example"] - results["gaussian"]["gflop_per_example"]) * 1e9
  results["prior_work_roofline_fraction"] = added_flops_per_example / (
      1 / best["vampprior"] - 1 / best["gaussian"]) / peak
  results["prior_work_roofline_fraction_for_3x"] = added_flops_per_example / (2 / best["gaussian"]) / peak
  return results


def dcgan_layers():
  """(generator, discriminator) of the DCGAN flagfile at 28×28 as (multiply-adds per example, fan-in side is
  data): dense 100 -> 7·7·128; 4×4 transposed convolutions 128 -> 64 on 7×7 and 64 -> 1 on 14×14 (16 taps per
  input pixel); 4×4 stride-2 convolutions 1 -> 64 to 14×14 and 64 -> 128 to 7×7; dense 6272 -> 1."""
  generator = [100 * 6272, 7 * 7 * 16 * 128 * 64, 14 * 14 * 16 * 64 * 1]
  discriminator = [14 * 14 * 16 * 1 * 64, 7 * 7 * 16 * 64 * 128, 6272 * 1]
  return generator, discriminator


def dcgan_flops_per_example():
  """FLOPs of one D step plus one G step, per example: forward 2·MACs per layer; backward 2·MACs for the
  weight gradient of each trained layer and 2·MACs for each input gradient that is needed (not the data's,
  not z's). D step: G forward, D forward and backward on the real and the fake batch. G step: G forward,
  D forward and input gradients (D frozen: no weight gradients), G backward."""
  generator, discriminator = dcgan_layers()
  g_forward, d_forward = sum(generator), sum(discriminator)
  d_input_gradients = d_forward - discriminator[0]
  d_step = g_forward + 2 * (d_forward + d_forward + d_input_gradients)
  g_step = g_forward + d_forward + d_forward + g_forward + (g_forward - generator[0])
  return 2 * (d_step + g_step)


def convhvae_step_benchmark(dispatches):
  """examples/s of the ConvHVAE's training step (density_convhvae.cfg's settings, one step per dispatch)."""
  from gen_jax.families import vae
  return training_throughput(flagfile_config(vae, "density_convhvae"), 1, dispatches)[0]


def pytorch_dcgan_rate(pytorch_python):
  """PyTorch's examples/s for the same DCGAN step (scripts/pytorch_dcgan.py, one 60-step window), on the cores
  JAX uses; exits with status 2 when `pytorch_python` cannot run it."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_dcgan.py")
  try:
    bfloat16 = ["--bfloat16"] if FLAGS.compute_dtype == "bfloat16" else []
    output = subprocess.run([pytorch_python, script, f"--threads={os.cpu_count()}", *bfloat16], check=True,
                            capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError) as error:
    stderr = (getattr(error, "stderr", "") or str(error)).strip().splitlines()
    print(f"error: --pytorch_python={pytorch_python} could not run {script} ({stderr[-1] if stderr else error}); "
          "allowed: a Python interpreter with torch installed", file=sys.stderr)
    sys.exit(2)
  return float(output.split()[-1])


def dcgan_step_benchmark(dispatches, peak, pytorch_python, rounds=3):
  """The DCGAN flagfile's step: examples/s, roofline fraction, and PyTorch's examples/s when it is at hand.

  gen_jax's timed windows alternate with PyTorch's runs (`rounds` of each, the fastest of each counting), so
  a slow spell of a shared machine falls on both sides rather than on one. As each PyTorch run times its steps
  after 10 untimed ones, each gen_jax window follows an untimed one of the same length."""
  from gen_jax.families import gan
  from gen_jax.models import convolution
  import jax
  # Without the EMA of G, which scripts/pytorch_dcgan.py does not keep either.
  config = flagfile_config(gan, "dcgan_fashion_mnist", "--ema_decay=0")
  time_window, _ = training_window_timer(config, 1, max(4 * dispatches // rounds, 1), 2 * rounds, family=gan)
  rates = {"gen_jax": 0.0, "pytorch": 0.0}
  for _ in range(rounds):
    time_window()  # Warm-up: the threads and caches after PyTorch's run (or the compilation).
    rates["gen_jax"] = max(rates["gen_jax"], time_window())
    if pytorch_python:
      rates["pytorch"] = max(rates["pytorch"], pytorch_dcgan_rate(pytorch_python))
  flops = dcgan_flops_per_example()
  result = {"examples_per_sec": rates["gen_jax"], "gflop_per_example": flops / 1e9,
            "roofline_fraction": rates["gen_jax"] * flops / peak, "xla_examples_per_sec": None}
  if pytorch_python:
    result["pytorch_examples_per_sec"] = rates["pytorch"]
  if jax.default_backend() == "cpu":  # The before/after figure: XLA's own convolutions in place of the patches.
    with convolution.using_convolutions({}):
      result["xla_examples_per_sec"] = training_throughput(config, 1, 4 * dispatches, family=gan)[0]
  return result


def report_vae(peak, model_shape):
  result = vae_training_throughput(FLAGS.steps_per_dispatch, FLAGS.dispatches)
  achieved = result["examples_per_sec"] * result["matmul_flops_per_example"]
  print(f"vae_pytorch_example training: {result['examples_per_sec']:.0f} examples/s "
        f"({result['epoch_seconds']:.2f} s per Fashion-MNIST epoch), "
        f"{result['matmul_flops_per_example'] / 1e6:.2f} MFLOP/example in matmuls -> "
        f"{achieved / 1e9:.0f} GFLOP/s = {achieved / peak:.0%} of the roofline "
        f"({achieved / model_shape:.0%} of the model-shaped matmul rate)")


def report_density(peak, model_shape):
  del model_shape
  density = density_step_benchmark(FLAGS.steps_per_dispatch, FLAGS.dispatches, peak)
  for name in ("gaussian", "vampprior"):
    row = density[name]
    print(f"density VAE step, {name} prior: {row['examples_per_sec']:.0f} examples/s "
          f"({50000 / row['examples_per_sec']:.1f} s per 50k-image epoch), {row['gflop_per_example'] * 1e3:.2f} "
          f"MFLOP/example in matmuls -> {row['roofline_fraction']:.0%} of the roofline")
  print(f"VampPrior step time / Gaussian-prior step time: {density['vampprior_step_time_ratio']:.2f}; the work the "
        f"VampPrior adds ran at {density['prior_work_roofline_fraction']:.0%} of the roofline, and 3x would need "
        f"{density['prior_work_roofline_fraction_for_3x']:.0%}")


def report_dcgan(peak, model_shape):
  del model_shape
  dcgan = dcgan_step_benchmark(FLAGS.dispatches, peak, FLAGS.pytorch_python)
  print(f"DCGAN step (dcgan_fashion_mnist.cfg): {dcgan['examples_per_sec']:.0f} examples/s, "
        f"{dcgan['gflop_per_example'] * 1e3:.0f} MFLOP/example -> {dcgan['roofline_fraction']:.0%} of the roofline"
        + (f"; PyTorch {dcgan['pytorch_examples_per_sec']:.0f} examples/s, alternated in the same run "
           f"(gen_jax / PyTorch = {dcgan['examples_per_sec'] / dcgan['pytorch_examples_per_sec']:.2f})"
           if "pytorch_examples_per_sec" in dcgan else "; PyTorch not timed (--pytorch_python unset)"))
  if dcgan["xla_examples_per_sec"]:
    print(f"  the same step with XLA's own CPU convolutions: {dcgan['xla_examples_per_sec']:.0f} examples/s")


def report_convhvae(peak, model_shape):
  del peak, model_shape
  convhvae = convhvae_step_benchmark(max(FLAGS.dispatches // 4, 2))
  print(f"ConvHVAE step (density_convhvae.cfg): {convhvae:.0f} examples/s ({50000 / convhvae:.0f} s per 50k-image "
        "epoch)")


def report_iwae(peak, model_shape):
  del model_shape
  if FLAGS.compute_dtype != "float32":
    return  # The likelihood evaluation runs in float32 whatever the training dtype.
  from benchmark_iwae import iwae_evaluation_benchmark
  iwae = iwae_evaluation_benchmark(peak / 1e9)
  print("iwae k=5000 evaluation: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in iwae.items()))


# --parts name -> report(roofline FLOP/s, model-shaped matmul FLOP/s); run in this order.
PARTS = {"vae": report_vae, "density": report_density, "dcgan": report_dcgan, "convhvae": report_convhvae,
         "iwae": report_iwae}
flags.DEFINE_list("parts", list(PARTS), f"Which measurements to run after the roofline; allowed: {', '.join(PARTS)}.")


def main(argv):
  del argv
  unknown = [part for part in FLAGS.parts if part not in PARTS]
  if unknown or not FLAGS.parts:
    raise UserError(f"--parts={','.join(FLAGS.parts)} names {', '.join(unknown) or 'nothing'}; allowed: a "
                    f"comma-separated list of {', '.join(PARTS)}")
  for name in ("steps_per_dispatch", "dispatches", "matmul_size"):
    if FLAGS[name].value <= 0:
      raise UserError(f"--{name}={FLAGS[name].value} is not allowed; allowed: a positive integer")
  import jax
  print(f"devices: {jax.devices()}")
  peak, model_shape = matmul_rates(FLAGS.matmul_size, FLAGS.compute_dtype)
  print(f"compute dtype: {FLAGS.compute_dtype}")
  print(f"matmul roofline ({FLAGS.matmul_size}^2 {FLAGS.compute_dtype}): {peak / 1e9:.0f} GFLOP/s; "
        f"128x784 @ 784x400: {model_shape / 1e9:.0f} GFLOP/s")
  for name, report in PARTS.items():
    if name in FLAGS.parts:
      report(peak, model_shape)


if __name__ == "__main__":
  from experiments import main as experiment_main
  experiment_main.run(main)
