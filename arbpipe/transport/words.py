"""The record accessors of ``shm_layouts.words``, compiled for numba kernels (inlined, so a
named accessor costs what the shift and mask it stands for cost)."""
from __future__ import annotations

from numba import njit

from shm_layouts import words as W

_inline = njit(inline="always", cache=True)

mu_instrument = _inline(W.mu_instrument)
mu_venue = _inline(W.mu_venue)
mu_kind = _inline(W.mu_kind)
mu_flags = _inline(W.mu_flags)
mu_head = _inline(W.mu_head)
mu_status = _inline(W.mu_status)
mu_status_reason = _inline(W.mu_status_reason)
mu_funding_interval = _inline(W.mu_funding_interval)
op_head = _inline(W.op_head)
op_state_word = _inline(W.op_state_word)
op_levels = _inline(W.op_levels)
