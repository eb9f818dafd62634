"""Data parallelism through `jax.sharding`: one mesh axis over every device of every process.

The whole program is written for global arrays. Parameters, optimizer state and the in-memory dataset are
replicated; the per-step example indices are sharded along the batch axis, so each device gathers and
processes only its slice of the global batch and XLA inserts the gradient all-reduce. The same jitted step
therefore runs unchanged on one CPU, on 8 GPUs, on a TPU slice and across hosts: `--batch_size` is always
the global batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gen_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh():
  """A 1-D mesh over all devices of all processes, named `data`."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh, batch_axis=0):
  """Shards axis `batch_axis` over the mesh, replicating the axes before it."""
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def global_array(host_array, sharding):
  """A global jax.Array from a host array that every process holds in full.

  Each process materialises only the shards its own devices need, which is also what makes this work
  across hosts, where `jax.device_put` of a host value is not allowed for non-addressable devices.
  """
  host_array = np.asarray(host_array)
  return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])


def replicate_tree(tree, mesh):
  """Places every leaf of a (host or single-device) pytree replicated over the mesh."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda leaf: global_array(jax.device_get(leaf), sharding), tree)


def check_batch_divisible(batch_size, mesh, flag="batch_size"):
  """The global batch must split evenly over the devices; say so in one line, naming `flag`, if it does not."""
  num_devices = mesh.devices.size
  if batch_size % num_devices:
    raise UserError(f"--{flag}={batch_size} does not split over {num_devices} devices; "
                    f"allowed: a multiple of {num_devices}")


def is_main_process():
  """Only process 0 writes metrics, images and samples; checkpoints are written by all (orbax)."""
  return jax.process_index() == 0


class SignalAgreement:
  """Whether any process of a multi-host run caught a signal, the same answer on every process, so that all
  stop at the same dispatch (a process that stopped to save while another dispatched on would leave both
  waiting in a collective). `update(number)` after each dispatch returns the agreed signal number or None.

  On several processes the answer comes one dispatch late: each call starts a small device-side maximum of
  the processes' numbers and reads the one the previous call started, which the device has finished by then,
  so the host never waits for the step it just dispatched. On one process it is the number itself, at once.
  """

  def __init__(self, mesh):
    self._several, self._pending = jax.process_count() > 1, None
    self._num_devices, self._sharding = mesh.devices.size, batch_sharded(mesh)
    self._largest = jax.jit(jnp.max, out_shardings=replicated(mesh))

  def update(self, number):
    if not self._several:
      return number
    agreed = int(self._pending) if self._pending is not None else 0
    # Each process fills only its own devices' entries (global_array), with its own number.
    mine = np.full(self._num_devices, number or 0, np.int32)
    self._pending = self._largest(global_array(mine, self._sharding))
    return agreed or None


def main_process_says(flag):
  """Process 0's `flag` on every process, so that all processes of a multi-host run take the same branch
  (each must run the same jitted computations) when only process 0 can read the answer (metrics.jsonl)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))
