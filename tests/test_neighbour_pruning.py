"""kernels/neighbour_pruning.py: the direct estimator's N > 1 neighbours that cannot be z_dir(+eps)
are skipped, and nothing the step computes changes.

- Over many random draws (shapes, M, eps, louder and quieter decoders), a direct step with
  pruning and one without, from the same parameters and batch: every gradient bit for bit, every
  kept loss bit for bit, every skipped loss +inf, and the skipped neighbours really lose
  (their full loss puts them below the sampled value in the arg max's own float32 arithmetic).
- The kept rows' hidden layers and x-linear parts are neighbour_hidden's, bit for bit.
- The lower bound holds with room: L_low <= the computed loss of every neighbour, and the
  rounding part of the bound is far above the float32 errors actually made.
- Real steps: a few training steps of the model's size on Fashion-MNIST end in bit-identical
  parameters with and without pruning (and most neighbours are skipped).
"""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.backend import cpu_backend
from dvae_cupy.estimators import EstimatorConfig, direct_gradients
from dvae_cupy.kernels import candidates, neighbour_pruning
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.step import TrainStep
from dvae_cupy.workspace import TrainWorkspace
import pruning_runs
from pruning_runs import assert_real_steps_bit_identical

CPU = cpu_backend()


def step_pair(shape, batch, samples, chunk, seed, loudness, eps, x_density=0.4):
    """Two direct steps (pruned, unpruned) from the same state (pruning_runs.step_pair)."""
    return pruning_runs.step_pair(direct_gradients, shape, batch, samples, chunk, seed, loudness,
                                  loudness, eps, x_density)


def argmax_values(ws, eps, samples):
    """V = fl(t - fl(eps L)) as kernels/argmax.py computes it (float32 NumPy), (R, N*K)."""
    logits = np.repeat(ws.encoder.out, samples, axis=0)
    return (logits + ws.gumbel) - eps[0] * ws.losses


# (N, K, H, D, batch, M, chunk, loudness, eps): uneven chunks; M > 1; K = 2; a chunk of 1 row;
# the model's H and D
DRAWS = [(3, 4, 16, 30, 7, 1, 5, 6.0, 0.5), (4, 3, 9, 13, 5, 2, 7, 6.0, 1.0),
         (5, 2, 12, 20, 6, 1, 1, 4.0, 0.2), (2, 5, 7, 11, 3, 3, 100, 8.0, 2.0),
         (6, 10, 300, 784, 10, 1, 64, 1.0, 1.0), (3, 10, 300, 784, 8, 2, 4096, 2.0, 0.3)]


@pytest.mark.parametrize("N, K, H, D, batch, M, chunk, loudness, eps", DRAWS, ids=str)
def test_pruning_changes_nothing_the_step_computes(N, K, H, D, batch, M, chunk, loudness, eps):
    shape = ModelShape(N, K, hidden=H, pixels=D)
    skipped = total = 0
    for seed in range(8):
        (pruned, unpruned), _, eps_array = step_pair(shape, batch, M, chunk, seed, loudness, eps)
        ws_p, model_p = pruned
        ws_u, model_u = unpruned
        for name in model_u.grads:
            np.testing.assert_array_equal(model_p.grads[name].view(np.uint32),
                                          model_u.grads[name].view(np.uint32), err_msg=name)
        kept = np.isfinite(ws_p.losses)
        np.testing.assert_array_equal(ws_p.losses[kept].view(np.uint32),
                                      ws_u.losses[kept].view(np.uint32))
        assert (ws_p.losses[~kept] == np.inf).all()
        # every skipped neighbour loses to its sampled value with its full loss
        values = argmax_values(ws_u, eps_array, M).reshape(batch * M, N, K)
        sampled = np.take_along_axis(values, ws_u.codes[..., None], axis=2)
        lost = (values < sampled).reshape(batch * M, N * K)
        assert lost[~kept].all()
        skipped += int((~kept).sum())
        total += batch * M * N * (K - 1)
        nb = ws_p.candidates
        assert nb.skipped + nb.decoded == batch * M * N * (K - 1) == nb.skipped + kept.sum() - batch * M * N
    assert 0 < skipped < total  # the comparison saw both kinds
    print(f"N={N} K={K}: {skipped} of {total} neighbours skipped")


def test_kept_rows_are_neighbour_hiddens_bit_for_bit():
    rng = np.random.default_rng(4)
    R, N, K, H = 6, 4, 5, 300
    pre = rng.standard_normal((R, H)).astype(np.float32)
    weight = rng.standard_normal((N * K, H)).astype(np.float32)
    codes = rng.integers(0, K, size=(R, N)).astype(np.int32)
    u = rng.standard_normal((R, H)).astype(np.float32)
    total = candidates.candidate_count(R, N, K)
    hidden, linear = np.empty((total, H), np.float32), np.empty(total, np.float32)
    candidates.neighbour_hidden(pre, weight, codes, K, u, 0, total, hidden, linear)
    # nothing can be skipped: a margin of +inf makes every lower bound -inf
    kept_hidden, kept_linear = np.empty((total, H), np.float32), np.empty(total, np.float32)
    ids, losses = np.empty(total, np.int32), np.zeros((R, N * K), np.float32)
    zeros = np.zeros((R, H), np.float32)
    count, stop = neighbour_pruning.select_neighbours(
        pre, weight, codes, K, u, zeros, zeros, np.full(R, np.inf), np.zeros(R), np.ones(R, np.float32),
        np.zeros((R, N * K), np.float32), np.zeros((R, N * K), np.float32), 1,
        np.array([1.0], np.float32), 0.5, 0, kept_hidden, kept_linear, ids, losses)
    assert count == stop == total and (ids == np.arange(total)).all()
    np.testing.assert_array_equal(kept_hidden.view(np.uint32), hidden.view(np.uint32))
    np.testing.assert_array_equal(kept_linear.view(np.uint32), linear.view(np.uint32))


def test_the_lower_bound_holds_with_room_for_every_neighbour():
    # the tangent minus the margin, as select_neighbours forms it, against every neighbour's
    # computed float32 loss; and the float32 errors against the margin's rounding part
    shape = ModelShape(5, 10)
    (_, unpruned), x, _ = step_pair(shape, 20, 1, 4096, 3, 1.0, 1.0)
    ws, model = unpruned
    nb, dec = ws.candidates, ws.decoder
    p = model.params
    R, H = dec.hidden.shape
    margin_w, margin_m, v_z = np.empty((R, H), np.float32), np.empty(R), np.empty(R)
    s = float(np.float32(1.0 / R))
    neighbour_pruning.prune_rows(dec.hidden, dec.dhidden, p["dec_w2"], p["dec_b2"], s,
                                 margin_w, margin_m, v_z)
    total = candidates.candidate_count(R, 5, 10)
    hidden, linear = np.empty((total, H), np.float32), np.empty(total, np.float32)
    candidates.neighbour_hidden(dec.pre, p["dec_w1"], ws.codes, 10, nb.u, 0, total, hidden, linear)
    g = np.arange(total)
    r, n, j = g // (5 * 9), (g // 9) % 5, g % 9
    k = j + (j >= ws.codes[r, n])
    computed = ws.losses[r, n * 10 + k].astype(np.float64)
    margin = neighbour_pruning.MARGIN_FACTOR * ((hidden * margin_w[r]).sum(axis=1) + margin_m[r])
    tangent = ws.recon[r].astype(np.float64) + ((hidden * dec.dhidden[r]).sum(axis=1) - v_z[r]) / s
    assert (tangent - margin <= computed).all()
    # float64 truth of both losses and of the tangent, from the same float32 hidden layers
    w2, b2 = p["dec_w2"].astype(np.float64), p["dec_b2"].astype(np.float64)
    xr = x.astype(np.float64)[r]

    def loss(h, targets):
        o = h.astype(np.float64) @ w2 + b2
        return ref.bce_with_logits(o, targets)
    sampled_truth = loss(dec.hidden, x.astype(np.float64))
    o_z = dec.hidden.astype(np.float64) @ w2 + b2
    v = (ref.sigmoid(o_z) - x) @ w2.T
    tangent_truth = sampled_truth[r] + ((hidden - dec.hidden[r]) * v[r]).sum(axis=1)
    neighbour_truth = loss(hidden, xr)
    assert (neighbour_truth >= tangent_truth - 1e-9 * np.abs(neighbour_truth)).all()  # convexity
    rounding = np.abs(computed - neighbour_truth) + np.abs(tangent - tangent_truth)
    worst = float((rounding / margin).max())
    print(f"float32 rounding made: at most {worst:.2e} of the margin "
          f"(median margin {np.median(margin):.3f} nats)")
    assert worst < 0.1


def test_a_few_real_steps_are_bit_identical_and_skip_most_neighbours():
    assert_real_steps_bit_identical(ModelShape(20, 10))


def test_pruning_refuses_where_it_cannot_hold():
    model = Model(ModelShape(3, 4, 8, 10), CPU)
    with pytest.raises(ValueError, match="prune needs"):
        TrainStep(model, EstimatorConfig(two_sided=True), 0, 4, 1e-3, prune=True)
    with pytest.raises(ValueError, match="prune needs"):
        TrainStep(Model(ModelShape(1, 4, 8, 10), CPU), EstimatorConfig(), 0, 4, 1e-3, prune=True)
    assert TrainStep(model, EstimatorConfig(), 0, 4, 1e-3).prune  # on by default where it holds
    assert not TrainStep(model, EstimatorConfig(two_sided=True), 0, 4, 1e-3).prune
    ws = TrainWorkspace(np, model.shape, "direct", 4, 1, prune=True)
    with pytest.raises(ValueError, match="two-sided"):
        direct_gradients(model, ws, np.zeros((4, 10), np.float32), 0, np.zeros(1, np.uint64),
                         np.ones(1, np.float32), 1, two_sided=True, prune=True)
