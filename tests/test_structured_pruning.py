"""kernels/structured_pruning.py: the pairwise model's z_dir(+eps) found while decoding only the
neighbours it can need, and nothing the step computes changes.

- Over many random draws (N, M, eps, louder and quieter decoders, attractive and signed, chunks
  of a few rows), a structured direct step with pruning and one without, from the same
  parameters and batch: z_dir and every gradient bit for bit, every decoded neighbour's loss bit
  for bit, every undecoded one a lower bound of its loss, and the pruned run decoded fewer.
- The bounds are select_neighbours' bounds (kernels/neighbour_pruning.py) and sit below every
  computed loss; the listed rows' hidden layers are neighbour_hidden's, bit for bit, in any
  chunking; the listed solvers are the full solvers on the listed rows and touch no other.
- Real steps: a few training steps of the published size on Fashion-MNIST end in bit-identical
  parameters with and without pruning, and most neighbours are not decoded.
"""
import numpy as np
import pytest

from dvae_cupy.backend import cpu_backend
from dvae_cupy.estimators import EstimatorConfig, structured_direct_gradients
from dvae_cupy.kernels import candidates, neighbour_pruning, structured_pruning
from dvae_cupy.kernels.pairwise_enumeration import enumeration_argmax, enumeration_argmax_listed
from dvae_cupy.kernels.pairwise_mincut import mincut_argmax, mincut_argmax_listed
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.step import TrainStep
from dvae_cupy.workspace import TrainWorkspace
import pruning_runs
from pruning_runs import assert_real_steps_bit_identical

CPU = cpu_backend()


def step_pair(shape, batch, samples, chunk, seed, loudness, eps):
    """Two structured direct steps (pruned, unpruned) from the same state: (workspace, model)
    pairs (pruning_runs.step_pair; potentials 3x: the pairwise terms matter)."""
    runs, _, _ = pruning_runs.step_pair(structured_direct_gradients, shape, batch, samples, chunk,
                                        seed, loudness, 3.0, eps)
    return runs


def flipped_columns(codes):
    """(R, 2N) bool: the columns of the neighbours (the value each variable does not take)."""
    R, N = codes.shape
    columns = np.zeros((R, 2 * N), bool)
    rows = np.arange(R)[:, None]
    columns[rows, 2 * np.arange(N) + 1 - codes] = True
    return columns


# (N, mode, H, D, batch, M, chunk, loudness, eps): chunks of 1 and a few rows; M > 1; the
# model's H and D; attractive (min-cut) and signed (enumeration)
DRAWS = [(4, "attractive", 9, 13, 6, 1, 5, 6.0, 0.5), (6, "attractive", 12, 20, 5, 2, 1, 4.0, 1.0),
         (3, "signed", 9, 13, 7, 1, 4, 8.0, 2.0), (7, "signed", 16, 30, 4, 2, 9, 5.0, 0.3),
         (10, "attractive", 300, 784, 8, 1, 64, 4.0, 2.0),
         (8, "signed", 300, 784, 6, 2, 4096, 2.0, 0.5)]


@pytest.mark.parametrize("N, mode, H, D, batch, M, chunk, loudness, eps", DRAWS, ids=str)
def test_pruning_changes_nothing_the_step_computes(N, mode, H, D, batch, M, chunk, loudness, eps):
    shape = ModelShape(N, 2, hidden=H, pixels=D, structure="pairwise", pairwise=mode)
    undecoded = moved = 0
    for seed in range(8):
        (pruned, unpruned) = step_pair(shape, batch, M, chunk, seed, loudness, eps)
        ws_p, model_p = pruned
        ws_u, model_u = unpruned
        np.testing.assert_array_equal(ws_p.structured.codes_dir, ws_u.structured.codes_dir)
        for name in model_u.grads:
            np.testing.assert_array_equal(model_p.grads[name].view(np.uint32),
                                          model_u.grads[name].view(np.uint32), err_msg=name)
        neighbours = flipped_columns(ws_u.codes)
        # both columns of a decoded variable: its neighbour and the sampled code
        decoded = np.repeat(ws_p.candidates.decoded_mask.astype(bool), 2, axis=1) | ~neighbours
        np.testing.assert_array_equal(ws_p.losses[decoded].view(np.uint32),
                                      ws_u.losses[decoded].view(np.uint32))
        assert (ws_p.losses[~decoded] < ws_u.losses[~decoded]).all()  # lower bounds
        undecoded += int((~decoded).sum())
        moved += int((ws_u.structured.codes_dir != ws_u.codes).sum())
        nb = ws_p.candidates
        assert nb.decoded + nb.skipped == batch * M * N
        assert nb.decoded == int(ws_p.candidates.decoded_mask.sum())
    total = 8 * batch * M * N
    assert 0 < undecoded < total and moved > 0  # both kinds seen, and z_dir != z_opt somewhere
    print(f"N={N} {mode}: {undecoded} of {total} neighbours not decoded; z_dir moved {moved} variables")


def test_the_bounds_are_select_neighbours_and_below_every_loss():
    shape = ModelShape(6, 2, hidden=300, pixels=784, structure="pairwise")
    (_, unpruned) = step_pair(shape, 12, 1, 4096, 2, 1.0, 1.0)
    ws, model = unpruned
    nb, dec, p = ws.candidates, ws.decoder, model.params
    R, H = dec.hidden.shape
    s = float(np.float32(1.0 / R))
    margin_w, margin_m, v_z = np.empty((R, H), np.float32), np.empty(R), np.empty(R)
    neighbour_pruning.prune_rows(dec.hidden, dec.dhidden, p["dec_w2"], p["dec_b2"], s,
                                 margin_w, margin_m, v_z)
    bounds, decoded = np.empty((R, 12), np.float32), np.ones((R, 6), np.uint8)
    structured_pruning.neighbour_loss_bounds(
        dec.pre, p["dec_w1"], ws.codes, nb.u, dec.dhidden, margin_w, margin_m, v_z, ws.recon, s,
        np.empty((1, H), np.float32), bounds, decoded)
    assert not decoded.any()
    neighbours = flipped_columns(ws.codes)
    np.testing.assert_array_equal(bounds[~neighbours], np.repeat(ws.recon, 6))
    assert (bounds[neighbours] < ws.losses[neighbours]).all()
    # select_neighbours skips a neighbour exactly when its bound puts it below the sampled
    # value: with logits and noise that make that comparison eps * (L_low - L_z) vs 0, the
    # skipped ones are those with L_low > L_z
    total = candidates.candidate_count(R, 6, 2)
    hidden, linear, ids = (np.empty((total, H), np.float32), np.empty(total, np.float32),
                           np.empty(total, np.int32))
    losses = np.zeros((R, 12), np.float32)
    zeros = np.zeros((R, 12), np.float32)
    neighbour_pruning.select_neighbours(
        dec.pre, p["dec_w1"], ws.codes, 2, nb.u, dec.dhidden, margin_w, margin_m, v_z, ws.recon,
        zeros, zeros, 1, np.array([1.0], np.float32), s, 0, hidden, linear, ids, losses)
    skipped = losses == np.inf
    above = neighbours & (bounds > np.repeat(ws.recon[:, None], 12, axis=1))
    np.testing.assert_array_equal(skipped, above)


@pytest.mark.parametrize("capacity", [1, 3, 1000])
def test_listed_rows_are_neighbour_hiddens_in_any_chunking(capacity):
    rng = np.random.default_rng(capacity)
    R, N, H = 7, 5, 40
    pre = rng.standard_normal((R, H)).astype(np.float32)
    weight = rng.standard_normal((2 * N, H)).astype(np.float32)
    codes = rng.integers(0, 2, size=(R, N)).astype(np.int32)
    trial = codes.copy()
    flip = rng.random((R, N)) < 0.4
    trial[flip] = 1 - trial[flip]
    trial[3] = codes[3]  # a row with nothing flipped
    u = rng.standard_normal((R, H)).astype(np.float32)
    total = candidates.candidate_count(R, N, 2)
    every_hidden, every_linear = np.empty((total, H), np.float32), np.empty(total, np.float32)
    candidates.neighbour_hidden(pre, weight, codes, 2, u, 0, total, every_hidden, every_linear)
    decoded = np.zeros((R, N), np.uint8)
    decoded[0, :] = flip[0]  # already decoded: not listed again
    hidden, linear = np.empty((capacity, H), np.float32), np.empty(capacity, np.float32)
    ids, rows = np.empty(capacity, np.int32), np.empty(R, np.int32)
    listed, start, row_count = [], 0, 0
    while start < total:
        count, start, row_count = structured_pruning.list_flipped_neighbours(
            pre, weight, codes, trial, u, start, hidden, linear, ids, decoded, rows, row_count)
        for c in range(count):
            np.testing.assert_array_equal(hidden[c].view(np.uint32),
                                          every_hidden[ids[c]].view(np.uint32))
            assert linear[c].view(np.uint32) == every_linear[ids[c]].view(np.uint32)
        listed += list(ids[:count])
    expected = [r * N + i for r in range(1, R) for i in range(N) if flip[r, i] and r != 3]
    assert listed == expected
    assert list(rows[:row_count]) == sorted({g // N for g in expected})
    assert (decoded.astype(bool) == (flip & (np.arange(R) != 3)[:, None])).all()


@pytest.mark.parametrize("mode", ["attractive", "signed"])
def test_listed_solvers_solve_the_listed_rows_only(mode):
    rng = np.random.default_rng(0)
    R, N, M = 12, 7, 2
    unary = rng.normal(scale=3, size=(R, 2 * N)).astype(np.float32)
    pairwise = rng.normal(scale=2, size=(R // M, N * (N - 1) // 2)).astype(np.float32)
    if mode == "attractive":
        pairwise, solve, listed_solve = np.abs(pairwise), mincut_argmax, mincut_argmax_listed
    else:
        solve, listed_solve = enumeration_argmax, enumeration_argmax_listed
    full = np.empty((R, N), np.int32)
    solve(unary, pairwise, M, full)
    codes = np.full((R, N), 7, np.int32)
    rows = np.array([1, 4, 5, 10, 0, 0], np.int32)
    listed_solve(unary, pairwise, M, rows, 4, codes)
    chosen = np.zeros(R, bool)
    chosen[[1, 4, 5, 10]] = True
    np.testing.assert_array_equal(codes[chosen], full[chosen])
    assert (codes[~chosen] == 7).all()
    with pytest.raises(ValueError, match="rows"):
        listed_solve(unary, pairwise, M, np.array([0, 12], np.int32), 2, codes)
    with pytest.raises(ValueError, match="count"):
        listed_solve(unary, pairwise, M, rows, 7, codes)


def test_single_flip_codes_flip_what_pays_alone():
    rng = np.random.default_rng(1)
    R, N = 9, 6
    shifted = rng.normal(scale=2, size=(R, 2 * N)).astype(np.float32)
    pairwise = np.abs(rng.normal(size=(R, N * (N - 1) // 2))).astype(np.float32)
    codes = rng.integers(0, 2, size=(R, N)).astype(np.int32)
    trial = np.empty_like(codes)
    structured_pruning.single_flip_codes(shifted, pairwise, 1, codes, trial)
    w = np.zeros((R, N, N))
    iu = np.triu_indices(N, 1)
    w[:, iu[0], iu[1]] = pairwise
    w += w.transpose(0, 2, 1)

    def score(z):
        unary = np.take_along_axis(shifted.reshape(R, N, 2), z[..., None], axis=2)[..., 0]
        return unary.astype(np.float64).sum(1) + 0.5 * np.einsum("ri,rij,rj->r", z, w, z)
    for i in range(N):
        flipped = codes.copy()
        flipped[:, i] = 1 - flipped[:, i]
        pays = score(flipped) > score(codes)
        np.testing.assert_array_equal(trial[:, i], np.where(pays, flipped[:, i], codes[:, i]))


def test_a_few_real_steps_are_bit_identical_and_decode_few_neighbours():
    assert_real_steps_bit_identical(ModelShape(15, 2, structure="pairwise"))


def test_pruning_refuses_the_two_sided_estimator():
    shape = ModelShape(4, 2, 8, 10, structure="pairwise")
    model = Model(shape, CPU)
    assert TrainStep(model, EstimatorConfig(), 0, 4, 1e-3).prune  # on by default on the CPU
    assert not TrainStep(model, EstimatorConfig(two_sided=True), 0, 4, 1e-3).prune
    with pytest.raises(ValueError, match="prune needs"):
        TrainStep(model, EstimatorConfig(two_sided=True), 0, 4, 1e-3, prune=True)
    ws = TrainWorkspace(np, shape, "direct", 4, 1, prune=True)
    with pytest.raises(ValueError, match="two-sided"):
        structured_direct_gradients(model, ws, np.zeros((4, 10), np.float32), 0,
                                    np.zeros(1, np.uint64), np.ones(1, np.float32), 1,
                                    two_sided=True, prune=True)
