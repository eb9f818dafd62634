"""Keeping freed host memory in the process, so that XLA:CPU's buffers are not page-faulted in at every step.

On the CPU, each dispatch of a jitted step allocates its buffers (temporaries and outputs: ~90 MB for the
DCGAN step) with malloc and frees them when it ends. glibc serves large blocks (from 128 KiB, a threshold it
raises as far as 32 MiB) with mappings of their own and hands them back to the kernel on `free`, and trims
freed memory off its heap's top, so every dispatch touches its buffers' pages for the first time: about
21,000 page faults a DCGAN step on the 2-core development machine, each a trip into the kernel that zeroes
4 KiB. Told never to `mmap` and never to trim its heap, glibc keeps freed blocks and the next dispatch reuses
them: about 800–1,900 faults a step, and the DCGAN step ran at 930 instead of 711 examples/s (alternated
windows in one process; README, "Speed").

The cost is that the process keeps the largest heap it has needed until it exits, which is what a training
or evaluation process wants anyway. It is applied only where the devices are the host's own memory (the CPU
backend) and the C library is glibc (Linux); elsewhere it does nothing.
"""

import ctypes
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_LARGEST_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int.


def keep_freed_memory(platform_name):
  """For devices of `platform_name` ("cpu", "gpu", "tpu"): on the CPU under glibc, serves every block from
  malloc's heap and never returns freed memory to the kernel. Returns whether that setting is in force."""
  if platform_name != "cpu" or platform.libc_ver()[0] != "glibc":
    return False
  mallopt = ctypes.CDLL(None).mallopt
  # mallopt returns 1 on success; both settings or neither matter (no mmap but trimming would still fault).
  return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST_TRIM_THRESHOLD))
