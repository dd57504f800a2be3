"""benchmarks/torch_peer_structured.py (the published structured algorithm in PyTorch, for the
speed race) against the float64 reference structured estimator, for the same noise.
Skips without torch or PyMaxflow (bench-only dependencies)."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch peer needs torch (pip install torch)")
pytest.importorskip("maxflow", reason="the structured peer needs PyMaxflow (pip install PyMaxflow)")

from dvae_cupy import reference as ref  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from torch_peer_structured import TorchPeerStructured  # noqa: E402


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


def test_candidate_rows_equal_the_published_clones():
    N, R = 4, 3
    peer = TorchPeerStructured(N, hidden=5, pixels=7)
    z = torch.nn.functional.one_hot(torch.randint(0, 2, (R, N)), 2).to(torch.float32)
    rows = []  # run_structured_maxflow.py: for n, for k: clone, zero variable n, set k
    for n in range(N):
        cleared = z.clone()
        cleared[:, n, :] = 0
        for k in range(2):
            clone = cleared.clone()
            clone[:, n, k] = 1
            rows.append(clone)
    published = torch.stack(rows, dim=1).reshape(R * N * 2, 2 * N)
    assert torch.equal(peer._candidates(z), published)


def test_a_training_step_runs_and_learns_nothing_silly():
    peer = TorchPeerStructured(4, hidden=10, pixels=12, seed=0)
    x = (np.random.default_rng(0).uniform(size=(8, 12)) > 0.5).astype(np.float32)
    losses = [peer.train_step(x) for _ in range(30)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
