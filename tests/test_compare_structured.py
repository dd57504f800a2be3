"""benchmarks/compare.py's structured race sides (structured-speed, structured-scaling): a smoke
run of one tiny step each, checking that each side is the model its name says. The figures
themselves are measured by the benchmark, not here. The peer side skips without torch or
PyMaxflow (bench-only dependencies). The tables' ratio columns are checked on fixed timings
(the race replaced)."""
import argparse
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import compare  # noqa: E402

N, BATCH = 3, 10


def tiny_batch():
    return (np.random.default_rng(0).uniform(size=(BATCH, 784)) > 0.5).astype(np.float32)


@pytest.mark.parametrize("side, mode", [("pairwise-attractive", "attractive"),
                                        ("pairwise-signed", "signed")])
def test_our_structured_sides_step_the_pairwise_model(side, mode):
    stepper, peak, convert = compare._make_side(side, "cpu", N, 2, 0, 1, BATCH)
    shape = stepper.model.shape
    assert (shape.structure, shape.pairwise, shape.n_latent, shape.n_categories) == \
        ("pairwise", mode, N, 2)
    before = stepper.model.host_params()["enc_w2"].copy()
    stepper(convert(tiny_batch()))
    assert stepper.step.step == 1
    assert not np.array_equal(stepper.model.host_params()["enc_w2"], before)  # Adam moved it
    assert peak(convert(tiny_batch())) > stepper.model.nbytes() + stepper.step.nbytes()


@pytest.mark.parametrize("side, published", [("peer-structured", False),
                                             ("peer-structured-published", True)])
def test_the_structured_peer_sides_are_the_published_algorithm(side, published):
    pytest.importorskip("torch", reason="the PyTorch peer needs torch")
    pytest.importorskip("maxflow", reason="the structured peer needs PyMaxflow")
    from torch_peer_structured import TorchPeerStructured

    stepper, _, convert = compare._make_side(side, "cpu", N, 2, 0, 1, BATCH)
    peer = stepper.__self__
    assert isinstance(peer, TorchPeerStructured) and peer.N == N
    assert peer.published_loops is published
    assert math.isfinite(stepper(convert(tiny_batch())))  # (its peak: torch's profiler, slow)


MEDIAN_MS = {"pairwise-attractive": 5.0, "pairwise-signed": 8.0, "peer-structured": 60.0,
             "peer-structured-published": 100.0, "ours": 4.0, "peer": 20.0}


def fake_race(args, n_latent, n_categories, sides):
    return {who: ([MEDIAN_MS[who] / 1e3] * 3, 2**20) for who in sides}


def table_rows(text, first_cell):
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith(f"| {first_cell} |")]


def test_structured_speed_prints_a_ratio_per_structured_peer(monkeypatch, capsys):
    pytest.importorskip("torch", reason="structured-speed prints torch's version")
    monkeypatch.setattr(compare, "race", fake_race)
    sides = ["pairwise-attractive", "peer-structured", "peer-structured-published", "ours", "peer"]
    args = argparse.Namespace(backend="cpu", threads=1, batch_size=BATCH, steps=3, warmup=1,
                              block=1, trained=None, sizes=[N], sides=sides)
    compare.structured_speed(args)
    out = capsys.readouterr().out
    assert "| vectorised peer / this | as-published peer / this |" in out
    ratios = {row[1]: row[-2:] for row in table_rows(out, N)}
    label = compare.SIDE_LABELS
    assert ratios[label["pairwise-attractive"]] == ["12.0x", "20.0x"]
    assert ratios[label["peer-structured-published"]] == ["0.6x", "1.0x"]
    assert ratios[label["ours"]] == ["5.0x", "-"]  # the unstructured peer; no as-published one

    args.sides = ["pairwise-attractive", "peer-structured"]  # the as-published peer did not race
    compare.structured_speed(args)
    ratios = {row[1]: row[-2:] for row in table_rows(capsys.readouterr().out, N)}
    assert ratios[label["pairwise-attractive"]] == ["12.0x", "-"]


def test_structured_scaling_prints_a_ratio_per_raced_peer(monkeypatch, capsys):
    monkeypatch.setattr(compare, "race", fake_race)
    monkeypatch.setattr(compare, "solver_ms", lambda n, batch, repeats: {
        (name, solve): 1.0 for name in ("min-cut", "enumeration") for solve in ("z_opt", "z_dir")})
    args = argparse.Namespace(threads=1, batch_size=BATCH, steps=3, warmup=1, block=1, sizes=[N],
                              sides=["pairwise-signed", "peer-structured-published"])
    compare.structured_scaling(args)
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("| N |"))
    assert "as-published peer / attractive | as-published peer / signed" in head
    assert "vectorised peer" not in head
    row = table_rows(out, N)[0]
    assert len(row) == len(head.strip("|").split("|"))
    assert row[3:7] == ["8.00", "100.00", "-", "12.5x"]


def test_an_unknown_side_is_named():
    with pytest.raises(ValueError, match="unknown side 'pairwise-other'"):
        compare._make_side("pairwise-other", "cpu", N, 2, 0, 1, BATCH)
