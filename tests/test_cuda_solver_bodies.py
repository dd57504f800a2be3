"""The structured solvers' CUDA kernels at the scale issue 13 asks for: 10,000 untied sets per
N = 1..12, attractive (min-cut) and signed (enumeration), against brute force.

The CUDA simulator runs a kernel's block as Python threads (~0.2 s a set at N = 12: 10,000 sets
per N would take hours), so it checks the kernels on tens of sets per N
(tests/cudasim/test_pairwise_*_cuda.py). Here the kernels' own device bodies (the plain Python
functions kernels/pairwise_mincut.py and kernels/pairwise_enumeration.py compile with
cuda.jit(device=True)) are compiled for the CPU by Numba and run in the kernels' order, a
block's T threads one after another within each phase. The kernels are written so that the
threads of a phase never read what another thread writes in that phase (each module docstring
says why), so any order of the threads, this one included, computes what the block computes;
the syncthreads between phases are the loop boundaries here. So the bodies and their sequence
are checked here at scale, and the CUDA mechanics (shared memory, syncthreads, atomics) under
the simulator. The emulations below follow mincut_argmax_kernel and enumeration_argmax_kernel
step for step: a change to a kernel's sequence must be made here too.
"""
import numba
import numpy as np
import pytest

from dvae_cupy.kernels import pairwise_enumeration as enumeration
from dvae_cupy.kernels import pairwise_mincut as mincut
from dvae_cupy.kernels._pairwise import FORCING_VECTORS, forced_codes
from pairwise_cases import (coupled_potentials, integer_potentials, reverse_residual_sets,
                            untied_potentials)

SETS_PER_N = 10_000

_cpu = numba.njit(inline="always")
mc_setup, mc_push = _cpu(mincut._setup), _cpu(mincut._push_two_hop_paths)
mc_reset, mc_discover = _cpu(mincut._reset_levels), _cpu(mincut._discover)
mc_augment, mc_write = _cpu(mincut._augment), _cpu(mincut._write_codes)
en_setup, en_reduced = _cpu(enumeration._setup), _cpu(enumeration._reduced_setup)
en_table, en_chunks = _cpu(enumeration._low_table), _cpu(enumeration._best_of_chunks)
en_better = enumeration.better


@numba.njit
def mincut_blocks(unary, pairwise, M, T, codes):
    """mincut_argmax_kernel's blocks, one row each, with T threads run in turn."""
    R, N = codes.shape
    P = pairwise.shape[1]
    graph = np.zeros(2 * N + 2 * P)
    level = np.zeros(N + 2, np.int32)
    parent = np.zeros(N + 2, np.int32)
    forcing = np.zeros(FORCING_VECTORS * N)
    for r in range(R):
        bad = 0
        for t in range(T):
            bad = max(bad, mc_setup(unary, pairwise, r, r // M, N, t, T, graph))
        if bad:
            codes[r, :] = -1
            continue
        if forced_codes(unary, pairwise, r, r // M, N, forcing, level) == 0:  # thread 0
            for i in range(N):
                codes[r, i] = level[i]
            continue
        mc_push(N, P, graph)  # thread 0
        while True:
            for t in range(T):
                mc_reset(N, t, T, level)
            d = 0
            while True:
                found = 0
                for t in range(T):
                    found = max(found, mc_discover(d, N, P, t, T, graph, level, parent))
                if found != 1:
                    break
                d += 1
            if found == 0:
                break
            mc_augment(N, P, graph, parent)  # thread 0
        for t in range(T):
            mc_write(r, N, t, T, level, codes)


@numba.njit
def enumeration_blocks(unary, pairwise, M, T, codes):
    """enumeration_argmax_kernel's blocks, one row each, with T threads run in turn."""
    R, N = codes.shape
    a = np.zeros(N)
    w = np.zeros(N * N)
    table = np.zeros(enumeration.LOW_CODES)
    field = np.zeros(N)
    cross = np.zeros(enumeration.LOW_CODES)
    forcing = np.zeros(FORCING_VECTORS * N)
    state = np.zeros(N, np.int32)
    index = np.zeros(N, np.int32)
    scores = np.zeros(T)
    best_codes = np.zeros(T, np.int64)
    for r in range(R):
        bad = 0
        for t in range(T):
            bad = max(bad, en_setup(unary, pairwise, r, r // M, N, t, T, a, w))
        if bad:
            codes[r, :] = -1
            continue
        forced_codes(unary, pairwise, r, r // M, N, forcing, state)  # thread 0
        n = en_reduced(unary, pairwise, r, r // M, N, state, a, w, index)
        for i in range(N):
            if state[i] >= 0:
                codes[r, i] = state[i]
        if n == 0:
            continue
        for t in range(T):
            en_table(a, w, n, t, T, table)
        for t in range(T):
            scores[t], best_codes[t] = en_chunks(a, w, table, n, t, T, field, cross)
        stride = T // 2
        while stride > 0:
            for t in range(stride):
                if en_better(scores[t + stride], best_codes[t + stride], scores[t],
                             best_codes[t]):
                    scores[t] = scores[t + stride]
                    best_codes[t] = best_codes[t + stride]
            stride //= 2
        for k in range(n):
            codes[r, index[k]] = (best_codes[0] >> k) & 1


def enumeration_threads(N):
    """The launcher's block size (enumeration_argmax_cuda)."""
    return 1 << (N - enumeration.low_bits(N) - enumeration.gray_chunk_bits(N))


def solve(blocks, unary, pairwise, T):
    codes = np.full((len(unary), unary.shape[1] // 2), -7, np.int32)
    blocks(unary, pairwise, np.int32(1), T, codes)
    return codes


@pytest.mark.slow
@pytest.mark.parametrize("N", range(1, 13))
def test_mincut_kernel_bodies_equal_brute_force_on_10000_sets(N):
    unary, pairwise, truth = untied_potentials(np.random.default_rng([31, N]), SETS_PER_N, N,
                                               "attractive")
    threads = min(mincut.MINCUT_THREADS, N + 2)  # the launcher's
    np.testing.assert_array_equal(solve(mincut_blocks, unary, pairwise, threads), truth)
    # and where the forcing leaves the flow to do, with another thread count
    unary, pairwise, truth = untied_potentials(np.random.default_rng([32, N]), SETS_PER_N // 10,
                                               N, "attractive", draw=coupled_potentials)
    np.testing.assert_array_equal(solve(mincut_blocks, unary, pairwise, 3), truth)


@pytest.mark.parametrize("N", [5, 6])
def test_mincut_kernel_bodies_on_sets_whose_max_flow_needs_a_reverse_residual(N):
    unary, pairwise, truth = reverse_residual_sets(N)
    for threads in (1, 3, N + 2):
        np.testing.assert_array_equal(solve(mincut_blocks, unary, pairwise, threads), truth)


@pytest.mark.slow
@pytest.mark.parametrize("N", range(1, 13))
def test_enumeration_kernel_bodies_equal_brute_force_on_10000_sets(N):
    unary, pairwise, truth = untied_potentials(np.random.default_rng([33, N]), SETS_PER_N, N,
                                               "signed")
    threads = enumeration_threads(N)
    np.testing.assert_array_equal(solve(enumeration_blocks, unary, pairwise, threads), truth)
    unary, pairwise, truth = untied_potentials(np.random.default_rng([34, N]), SETS_PER_N // 10,
                                               N, "signed", draw=coupled_potentials)
    np.testing.assert_array_equal(solve(enumeration_blocks, unary, pairwise, threads), truth)


@pytest.mark.parametrize("N, count", [(13, 300), (16, 60)])
def test_enumeration_kernel_bodies_gray_code_flips(N, count):
    # up to N = 12 each thread's chunk is one high code scored afresh; beyond, the flips
    unary, pairwise, truth = untied_potentials(np.random.default_rng([36, N]), count, N,
                                               "signed", draw=coupled_potentials)
    np.testing.assert_array_equal(solve(enumeration_blocks, unary, pairwise,
                                        enumeration_threads(N)), truth)


def test_the_emulated_blocks_give_the_cpu_twins_codes():
    # a quick check (not slow) that the emulation is the kernels' algorithm: the CPU twins'
    # codes, ties included (the CPU and CUDA codes are equal: tests/cudasim)
    R, N = 300, 7
    unary, pairwise = integer_potentials(np.random.default_rng(35), R, N, (-3, 3), (0, 2))
    cpu = np.empty((R, N), np.int32)
    mincut.mincut_argmax(unary, pairwise, 1, cpu)
    np.testing.assert_array_equal(solve(mincut_blocks, unary, pairwise, min(32, N + 2)), cpu)
    pairwise -= 1.0  # either sign
    enumeration.enumeration_argmax(unary, pairwise, 1, cpu)
    np.testing.assert_array_equal(solve(enumeration_blocks, unary, pairwise,
                                        enumeration_threads(N)), cpu)
