"""benchmarks/torch_peer_structured.py (the published structured algorithm in PyTorch, for the
speed race) against the float64 reference structured estimator, for the same noise, and its two
modes (vectorised, and the published per-sample loops) against each other: the same codes,
candidate losses and gradients, bit for bit. Skips without torch or PyMaxflow (bench-only
dependencies)."""
import itertools
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch peer needs torch (pip install torch)")
pytest.importorskip("maxflow", reason="the structured peer needs PyMaxflow (pip install PyMaxflow)")

from dvae_cupy import reference as ref  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from torch_peer_structured import (TorchPeerStructured, candidates_as_published,  # noqa: E402
                                   mincut_argmax, mincut_argmax_as_published,
                                   pair_signs_as_published)


@pytest.mark.parametrize("M, eps", [(1, 1.0), (2, 0.3)])
def test_peer_gradients_equal_the_reference_estimator(M, eps):
    B, N, D, H = 6, 5, 30, 20
    peer = TorchPeerStructured(N, hidden=H, pixels=D, seed=3, gumbel_samples=M)
    peer.eps = eps
    with torch.no_grad():  # loss differences between codes large enough for eps L to move z
        peer.decoder[0].weight.mul_(20)
    rng = np.random.default_rng(4)
    x = (rng.uniform(size=(B, D)) > 0.5).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, N, 2)).astype(np.float32)  # published rows m*B + b
    loss, info = peer.gradients(x, gumbel)
    ours = gumbel.astype(np.float64).reshape(M, B, N, 2).transpose(1, 0, 2, 3)  # rows b*M + m
    ref_loss, ref_grads, ref_info = ref.structured_direct_estimator(
        peer.numpy_params(), x, N, ours, eps, "attractive")
    as_ours = lambda a: a.numpy().reshape(M, B, N).transpose(1, 0, 2)  # noqa: E731
    np.testing.assert_array_equal(as_ours(info["z_opt"]), ref_info["z_opt"])
    np.testing.assert_array_equal(as_ours(info["z_dir"]), ref_info["z_dir"])
    assert (ref_info["z_dir"] != ref_info["z_opt"]).any()  # the direct gradient is not zero
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    grads = peer.numpy_grads()
    for name in ref.PARAM_NAMES:  # float32 autograd against the float64 hand-derived gradient
        scale = np.abs(ref_grads[name]).max()
        assert scale > 0, name
        assert np.abs(grads[name] - ref_grads[name]).max() <= 2e-5 * scale + 1e-7, name


def brute_force_argmax(a, w):
    """arg max over all 2^N codes of a . z + sum_{i<j} w_ij z_i z_j."""
    codes = np.array(list(itertools.product((0, 1), repeat=len(a))))
    first, second = np.triu_indices(len(a), k=1)
    scores = codes @ a + (codes[:, first] * codes[:, second]) @ w
    return codes[np.argmax(scores)]


def test_both_graph_builds_solve_the_arg_max():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 7):
        for _ in range(40):
            a = rng.normal(scale=2.0, size=n)
            w = rng.exponential(size=n * (n - 1) // 2)
            best = brute_force_argmax(a, w)
            np.testing.assert_array_equal(mincut_argmax(a, w), best)
            published = mincut_argmax_as_published(a, w)
            assert published.dtype == np.float64  # get_grid_segments times 1.0, as published
            np.testing.assert_array_equal(published, best)


def test_candidate_rows_equal_the_published_clones():
    N, R, D = 4, 3, 7
    peer = TorchPeerStructured(N, hidden=5, pixels=D)
    z = torch.nn.functional.one_hot(torch.randint(0, 2, (R, N)), 2).to(torch.float32)
    x = torch.rand(R, D)
    rows, targets = candidates_as_published(z, x)
    assert torch.equal(peer._candidates(z), rows)
    assert torch.equal(x.repeat_interleave(2 * N, dim=0), targets)
    for r, n, k in itertools.product(range(R), range(N), range(2)):  # variable n set to k
        expected = z[r].clone()
        expected[n] = torch.nn.functional.one_hot(torch.tensor(k), 2)
        assert torch.equal(rows[(r * N + n) * 2 + k], expected.view(-1))


def test_pair_signs_equal_the_vectorised_ones():
    peer = TorchPeerStructured(6, hidden=5, pixels=7)
    z_opt, z_dir = torch.randint(0, 2, (2, 9, 6))
    signs = pair_signs_as_published(z_opt, z_dir)
    assert signs.dtype == torch.float32
    assert torch.equal(signs, peer._pair_stats(z_opt) - peer._pair_stats(z_dir))


@pytest.mark.parametrize("M, eps", [(1, 1.0), (2, 0.3)])
def test_the_published_loops_give_the_vectorised_step_exactly(M, eps):
    B, N, D, H = 6, 5, 30, 20
    rng = np.random.default_rng(5)
    x = (rng.uniform(size=(B, D)) > 0.5).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, N, 2)).astype(np.float32)
    steps = {}
    for published in (False, True):
        peer = TorchPeerStructured(N, hidden=H, pixels=D, seed=3, gumbel_samples=M,
                                   published_loops=published)
        peer.eps = eps
        with torch.no_grad():  # loss differences between codes large enough for eps L to move z
            peer.decoder[0].weight.mul_(20)
        loss, info = peer.gradients(x, gumbel)
        steps[published] = loss, info, peer.numpy_grads()
    (loss, info, grads), (loss_p, info_p, grads_p) = steps[False], steps[True]
    assert (info["z_dir"] != info["z_opt"]).any()  # the direct gradient is not zero
    for key in ("z_opt", "z_dir", "losses"):
        assert info_p[key].dtype == info[key].dtype and torch.equal(info_p[key], info[key]), key
    assert loss_p == loss
    for name, grad in grads.items():  # the same float32 operations on the same values
        assert np.abs(grad).max() > 0, name
        np.testing.assert_array_equal(grads_p[name], grad, err_msg=name)


def test_the_published_loops_train_and_test_as_the_vectorised_peer():
    x = (np.random.default_rng(1).uniform(size=(8, 12)) > 0.5).astype(np.float32)
    runs = {}
    for published in (False, True):
        peer = TorchPeerStructured(4, hidden=10, pixels=12, seed=2, gumbel_samples=2,
                                   published_loops=published)
        losses = [peer.train_step(x) for _ in range(5)]  # Gumbel draws from the same generator
        runs[published] = losses, peer.test_loss(x), peer.numpy_params()
    assert runs[True][:2] == runs[False][:2]
    for name, value in runs[False][2].items():
        np.testing.assert_array_equal(runs[True][2][name], value, err_msg=name)


def test_a_training_step_runs_and_learns_nothing_silly():
    peer = TorchPeerStructured(4, hidden=10, pixels=12, seed=0)
    x = (np.random.default_rng(0).uniform(size=(8, 12)) > 0.5).astype(np.float32)
    losses = [peer.train_step(x) for _ in range(30)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
