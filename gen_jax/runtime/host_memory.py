"""Keeping freed host memory in the process, so that XLA:CPU's buffers are not page-faulted in at every step.

On the CPU, each dispatch of a jitted step allocates its buffers (temporaries and outputs: ~90 MB for the
DCGAN step) with malloc and frees them when it ends. glibc serves large blocks (from 128 KiB, a threshold it
raises as far as 32 MiB) with mappings of their own and hands them back to the kernel on `free`, and trims
freed memory off its heap's top, so every dispatch touches its buffers' pages for the first time: about
21,000 page faults a DCGAN step on the 2-core development machine, each a trip into the kernel that zeroes
4 KiB. Told never to `mmap` and never to trim its heap, glibc keeps freed blocks and the next dispatch reuses
them: the DCGAN step ran at 930 instead of 711 examples/s (alternated windows in one process; README, "Speed").

That covers the main heap. XLA's threads allocate from arenas of their own, each a chain of heaps of at most
64 MiB, and glibc unmaps a chain's last heap as soon as it is wholly free, however high the trim threshold:
in about half of the processes the DCGAN step still faulted ~6,000 pages a step that way. glibc keeps such a
heap when unmapping it would leave its arena less free room than the "top pad"; a top pad of a whole heap's
size keeps every one. (The pad also makes the main heap grow in steps of 64 MiB of address space, which is
only reserved, never touched, until it is used.)

The cost is that the process keeps the largest heap it has needed until it exits, which is what a training
or evaluation process wants anyway. It is applied only where the devices are the host's own memory (the CPU
backend) and the C library is glibc (Linux); elsewhere it does nothing.
"""

import ctypes
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_LARGEST_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int.
_THREAD_ARENA_HEAP_SIZE = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit hosts: 2 × the largest mmap threshold.

# (parameter, value): no block gets a mapping of its own, the main heap is never trimmed, and no thread
# arena's heap is unmapped. Without any one of them the step still faults, so each must succeed.
_KEEP_FREED_MEMORY = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _LARGEST_TRIM_THRESHOLD),
                      (_M_TOP_PAD, _THREAD_ARENA_HEAP_SIZE))


def keep_freed_memory(platform_name):
  """For devices of `platform_name` ("cpu", "gpu", "tpu"): on the CPU under glibc, serves every block from
  malloc's heap and never returns freed memory to the kernel. Returns whether that setting is in force."""
  if platform_name != "cpu" or platform.libc_ver()[0] != "glibc":
    return False
  mallopt = ctypes.CDLL(None).mallopt
  return all(mallopt(parameter, value) == 1 for parameter, value in _KEEP_FREED_MEMORY)  # 1: success.
