"""kernels/active_rows.py and the encoder backward on the active rows alone: the rows found, and
the gradients and whole training steps bit for bit those of the backward on the whole batch."""
import numpy as np
import pytest

from dvae_cupy.backend import cpu_backend
from dvae_cupy.estimators import EstimatorConfig
from dvae_cupy.kernels.active_rows import gather_active_rows
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.step import TrainStep
from dvae_cupy.workspace import ActiveRowArrays, MLPArrays

CPU = cpu_backend()
RNG = np.random.default_rng(20261202)


def dout_with_active_rows(batch, width, active):
    """(batch, width) float32 of zero rows, but for the rows `active`, which have nonzeros (and
    a few exact zeros among them, as a real dlogits row has)."""
    dout = np.zeros((batch, width), np.float32)
    values = (RNG.standard_normal((len(active), width)) * 0.01).astype(np.float32)
    values[RNG.uniform(size=values.shape) < 0.3] = 0
    values[:, 0] = np.where(values[:, 0] == 0, np.float32(0.5), values[:, 0])  # each row active
    dout[list(active)] = values
    return dout


def gather(dout, limit=None):
    batch, width = dout.shape
    hidden = RNG.standard_normal((batch, 6)).astype(np.float32)
    inputs = RNG.standard_normal((batch, 5)).astype(np.float32)
    outs = tuple(np.full_like(a, 7.0) for a in (dout, hidden, inputs))
    rows = np.full(batch, -1, np.int64)
    count = gather_active_rows(dout, batch if limit is None else limit, rows,
                               (dout, hidden, inputs), outs)
    return count, rows, (dout, hidden, inputs), outs


@pytest.mark.parametrize("active", [[], [0, 1], [3, 4, 9], list(range(10)), [2, 5, 6, 8]])
def test_the_active_rows_are_found_in_order_and_gathered(active):
    count, rows, sources, outs = gather(dout_with_active_rows(10, 4, active))
    assert count == len(active) and list(rows[:count]) == active
    for source, out in zip(sources, outs):
        assert np.array_equal(out[:count], source[active])
        assert np.all(out[count:] == 7.0)  # rows past the count are not written


@pytest.mark.parametrize("active, rows", [([0], [0, 1]), ([4], [4, 5]), ([9], [8, 9])])
def test_a_single_active_row_is_paired_with_a_neighbouring_zero_row(active, rows):
    count, found, sources, outs = gather(dout_with_active_rows(10, 4, active))
    assert count == 2 and list(found[:2]) == rows
    assert np.array_equal(outs[0][:2], sources[0][rows])


def test_a_nan_row_is_active():
    dout = np.zeros((5, 3), np.float32)
    dout[3, 1] = np.nan
    dout[1, 2] = -0.25
    count, rows, _, _ = gather(dout)
    assert count == 2 and list(rows[:2]) == [1, 3]


def test_above_the_limit_the_rows_are_counted_and_nothing_is_gathered():
    count, rows, _, outs = gather(dout_with_active_rows(10, 4, [1, 2, 3, 7]), limit=3)
    assert count == 4 and list(rows[:4]) == [1, 2, 3, 7]
    assert all(np.all(out == 7.0) for out in outs)


def test_wrong_arguments_are_named():
    dout, hidden, inputs = (np.zeros((4, w), np.float32) for w in (3, 6, 5))
    rows = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"outs\[1\] must have shape"):
        gather_active_rows(dout, 4, rows, (dout, hidden), (dout.copy(), inputs.copy()))
    with pytest.raises(ValueError, match="rows must be int64"):
        gather_active_rows(dout, 4, rows.astype(np.int32), (hidden,), (hidden.copy(),))
    with pytest.raises(ValueError, match=r"sources\[0\] must have dout's 4 rows"):
        gather_active_rows(dout, 4, rows, (inputs[:3],), (inputs[:3].copy(),))
    with pytest.raises(ValueError, match="sources and outs must pair up"):
        gather_active_rows(dout, 4, rows, (hidden, inputs), (hidden.copy(),))


# ---------------------------------------------------------------------------------------------
# The encoder's backward: on the active rows, the same gradients as on the whole batch

BATCH = 100
SHAPES = {"n1-k10": ModelShape(1, 10), "n20-k10": ModelShape(20, 10),  # D = 784, H = 300
          "pairwise-n15": ModelShape(15, 2, structure="pairwise")}    # 135 encoder outputs


def encoder_gradients(model, x, encoder, dlogits, active):
    for g in model.grads.values():
        g[...] = np.nan
    model.encoder_backward(x, encoder, dlogits, active)
    return {name: g.copy() for name, g in model.grads.items() if name.startswith("enc")}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 13, 40, 90, 91, 100])
def test_the_encoder_gradients_on_the_active_rows_are_those_of_the_whole_batch(count, shape):
    model = Model(shape, CPU, seed=3)
    x = (RNG.uniform(size=(BATCH, shape.pixels)) < 0.3).astype(np.float32)  # 0/1, as trained
    encoder = MLPArrays.allocate(np, BATCH, shape.hidden, shape.encoder_outputs)
    model.encode(x, encoder)
    active_rows = sorted(RNG.choice(BATCH, count, replace=False).tolist())
    dlogits = dout_with_active_rows(BATCH, shape.encoder_outputs, active_rows)
    active = ActiveRowArrays.allocate(np, BATCH, shape.encoder_outputs, shape.hidden, shape.pixels)
    assert active.limit == 90  # 91 and 100 rows take the whole batch's path
    whole = encoder_gradients(model, x, encoder, dlogits, None)
    gathered = encoder_gradients(model, x, encoder, dlogits, active)
    for name in whole:
        assert np.array_equal(whole[name].view(np.int32), gathered[name].view(np.int32)), name


# ---------------------------------------------------------------------------------------------
# Whole steps: parameters and moments bit for bit with and without the gather


def train(shape, config, active_rows, steps=6, batch=20):
    model = Model(shape, CPU, seed=1)
    step = TrainStep(model, config, 5, batch, 1e-2, active_rows=active_rows)
    step.set_state(0, 0, 0.7)
    rng = np.random.default_rng(2)
    gathered = []
    for _ in range(steps):
        step.batch[...] = rng.uniform(size=step.batch.shape) < 0.3
        step()
        if active_rows:
            gathered.append(int(np.count_nonzero(np.any(step.workspace.dlogits != 0, axis=1))))
    if active_rows:  # the host counts: every row seen, the gathered ones (or whole batches)
        active = step.workspace.active
        assert active.seen == steps * batch
        assert active.gathered == sum(c if c <= active.limit else batch for c in
                                      (max(c, 2) if c == 1 else c for c in gathered))
    m, v = model.host_adam_moments()
    return [model.host_params(), m, v], gathered


@pytest.mark.parametrize("shape, config", [
    (ModelShape(1, 10, hidden=40, pixels=30), EstimatorConfig()),
    (ModelShape(1, 10, hidden=40, pixels=30), EstimatorConfig(gumbel_samples=2)),
    (ModelShape(3, 4, hidden=40, pixels=30), EstimatorConfig(two_sided=True)),
    (ModelShape(4, 2, hidden=40, pixels=30, structure="pairwise"), EstimatorConfig()),
    (ModelShape(15, 2, hidden=40, pixels=30, structure="pairwise", pairwise="signed"),
     EstimatorConfig()),
], ids=["n1", "n1-two-samples", "n3-two-sided", "pairwise", "pairwise-n15-signed"])
def test_training_steps_are_the_same_bits_with_the_gather(shape, config):
    whole, _ = train(shape, config, False)
    gathered, counts = train(shape, config, True)
    assert any(c < 20 for c in counts), counts  # some rows were left out
    for a, b in zip(whole, gathered):
        for name in a:
            assert np.array_equal(a[name].view(np.int32), b[name].view(np.int32)), name


def test_the_gather_is_on_where_it_can_be_and_refused_where_it_cannot():
    model = Model(ModelShape(1, 4, hidden=8, pixels=12), CPU, seed=0)
    assert TrainStep(model, EstimatorConfig(), 0, 4, 1e-3).workspace.active is not None
    for estimator in ("exact", "gumbel-softmax"):
        assert TrainStep(model, EstimatorConfig(estimator), 0, 4, 1e-3).workspace.active is None
        with pytest.raises(ValueError, match="active_rows needs"):
            TrainStep(model, EstimatorConfig(estimator), 0, 4, 1e-3, active_rows=True)
    assert TrainStep(model, EstimatorConfig(), 0, 4, 1e-3, active_rows=False).workspace.active is None
