"""The packed return value of the ring push and pop kernels, without numba: the ring
classes test it on every call, and a process that never runs a kernel (the supervisor)
imports the ring classes without importing the kernels (``arbpipe.transport.rings.jit``).

Push and pop kernels return ``count | wake << WAKE_SHIFT`` (``mpmc_pop`` also
``| stalled << STALL_SHIFT``): ``wake`` tells the Python side to post a doorbell.
"""
WAKE_SHIFT = 32
STALL_SHIFT = 33
COUNT_MASK = (1 << WAKE_SHIFT) - 1
WAKE_BIT = 1 << WAKE_SHIFT
STALL_BIT = 1 << STALL_SHIFT
