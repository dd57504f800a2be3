"""dvae_cupy.checkpoint: exact round trips, atomic writes that survive a crash mid-write, and
errors that name the file and the problem."""
import os
import re

import h5py
import numpy as np
import pytest

from dvae_cupy.checkpoint import FORMAT, Checkpoint, load_checkpoint, save_checkpoint


def escaped(path):
    """A file name as a literal for pytest.raises(match=...)."""
    return re.escape(str(path))


def sample_state(seed=0):
    """A checkpoint's worth of arguments with every kind of value the format promises to keep."""
    rng = np.random.default_rng(seed)
    params = {
        "enc_W1": rng.standard_normal((784, 30)).astype(np.float32),
        "enc_b1": rng.standard_normal(30),                       # float64
        "dec_W": rng.standard_normal((7, 3, 5)).astype(np.float32),
        "counts": rng.integers(-5, 5, size=(4,), dtype=np.int64),
        "scale": np.float32(0.5) * np.ones((), np.float32),      # 0-d
    }
    optimizer = {slot: {k: rng.standard_normal(v.shape).astype(v.dtype)
                        for k, v in params.items()} for slot in ("m", "v")}
    bitgen = np.random.default_rng(1234).bit_generator.state    # 128-bit ints inside
    rng_state = {
        "seed": 2**64 - 1,                                      # a uint64 seed
        "counter": np.uint64(17),
        "key": np.arange(4, dtype=np.uint32),
        "numpy": bitgen,
        "empty": {},
    }
    config = {"latent": [30, 10], "eps": {"start": 1.0, "schedule": [[0, 1.0], [100, 0.5]]},
              "dataset": "fashion-mnist", "dynamic": False, "note": None}
    extra = {"best_valid_loss": 101.25, "best_epoch": 3, "improved": True, "name": "run-1",
             "unset": None, "history": np.array([120.0, 110.5, 101.25])}
    return dict(params=params, optimizer=optimizer, step=12345, epoch=7, eps=0.1,
                rng_state=rng_state, config=config, extra=extra)


def assert_arrays_equal(got, want):
    """Same names in the same order, same dtypes, shapes and bits."""
    assert list(got) == list(want)
    for name in want:
        assert isinstance(got[name], np.ndarray), name
        assert got[name].dtype == np.asarray(want[name]).dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def assert_trees_equal(got, want):
    """Nested dicts: same keys, ints as Python ints of the same value, arrays bit-equal."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for key in want:
            assert_trees_equal(got[key], want[key])
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert got == want and type(got) is type(want.item() if hasattr(want, "item") else want)


# ------------------------------------------------------------------------------------------------
# Round trip

def test_round_trip_is_exact(tmp_path):
    state = sample_state()
    path = tmp_path / "ckpt.h5"
    save_checkpoint(path, **state)
    ckpt = load_checkpoint(path)

    assert isinstance(ckpt, Checkpoint)
    assert_arrays_equal(ckpt.params, state["params"])
    assert list(ckpt.optimizer) == ["m", "v"]
    for slot in ("m", "v"):
        assert_arrays_equal(ckpt.optimizer[slot], state["optimizer"][slot])
    assert (ckpt.step, ckpt.epoch, ckpt.eps) == (12345, 7, 0.1)
    assert type(ckpt.step) is int and type(ckpt.eps) is float
    assert ckpt.config == state["config"]
    assert_trees_equal(ckpt.rng_state, state["rng_state"])
    assert ckpt.rng_state["numpy"] == state["rng_state"]["numpy"]
    assert_trees_equal(ckpt.extra, state["extra"])
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["version"] == 1


def test_restored_numpy_generator_continues_the_same_stream(tmp_path):
    rng = np.random.default_rng(0)
    rng.random(10)
    state = sample_state()
    state["rng_state"] = {"numpy": rng.bit_generator.state}
    save_checkpoint(tmp_path / "c.h5", **state)
    expected = rng.random(5)

    resumed = np.random.default_rng()
    resumed.bit_generator.state = load_checkpoint(tmp_path / "c.h5").rng_state["numpy"]
    np.testing.assert_array_equal(resumed.random(5), expected)


def test_extra_none_stays_none_and_overwrite_replaces(tmp_path):
    path = tmp_path / "c.h5"
    save_checkpoint(path, **sample_state())
    state = dict(sample_state(1), extra=None, step=99)
    save_checkpoint(path, **state)
    ckpt = load_checkpoint(path)
    assert ckpt.extra is None and ckpt.step == 99
    assert_arrays_equal(ckpt.params, state["params"])


# ------------------------------------------------------------------------------------------------
# Atomicity

def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.h5"
    old = sample_state(0)
    save_checkpoint(path, **old)

    real_create = h5py.Group.create_dataset
    calls = []

    def crash_on_third(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise RuntimeError("simulated crash mid-write")
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(path, **dict(sample_state(1), step=1))
    monkeypatch.undo()

    assert len(calls) == 3                           # it did die part way through
    assert sorted(os.listdir(tmp_path)) == ["ckpt.h5"]   # no temporary file left behind
    ckpt = load_checkpoint(path)
    assert ckpt.step == old["step"]
    assert_arrays_equal(ckpt.params, old["params"])


def test_bad_value_mid_write_leaves_no_temp_file(tmp_path):
    state = sample_state()
    state["extra"] = {"history": [1.0, 2.0]}       # lists are refused: store arrays
    with pytest.raises(ValueError, match=r"extra/history.*list"):
        save_checkpoint(tmp_path / "c.h5", **state)
    assert os.listdir(tmp_path) == []


def test_temp_file_sits_beside_the_target(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append((a, b)), real_replace(a, b)))
    save_checkpoint(tmp_path / "c.h5", **sample_state())
    assert seen == [(f"{tmp_path / 'c.h5'}.tmp-{os.getpid()}", str(tmp_path / "c.h5"))]


# ------------------------------------------------------------------------------------------------
# Bad inputs and bad files

@pytest.mark.parametrize("change, match", [
    ({"step": 1.5}, "step must be an integer"),
    ({"epoch": True}, "epoch must be an integer"),
    ({"config": {"f": object()}}, "config is not JSON-serialisable"),
    ({"config": {"x": float("nan")}}, "config is not JSON-serialisable"),
    ({"params": {"a/b": np.zeros(2)}}, r"params: key 'a/b'"),
    ({"params": {"w": np.array(["x"])}}, r"params/w: arrays must be"),
    ({"rng_state": {"s": object()}}, r"rng_state/s: cannot store"),
    ({"rng_state": 42}, "rng_state must be a dict"),
    ({"extra": [1.0]}, "extra must be a dict"),
])
def test_bad_arguments_are_named(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "c.h5", **dict(sample_state(), **change))
    assert os.listdir(tmp_path) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=escaped(path)):
        load_checkpoint(path)


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("step=3\n")
    with pytest.raises(ValueError, match=escaped(path) + ".*not an HDF5 file"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "c.h5"
    save_checkpoint(path, **sample_state())
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(ValueError, match=escaped(path) + ".*truncated or corrupt"):
        load_checkpoint(path)


def test_wrong_format_attribute(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "dvae_cupy.dataset"
    with pytest.raises(ValueError, match=escaped(path) + ".*format attribute is 'dvae_cupy"):
        load_checkpoint(path)


@pytest.mark.parametrize("remove, match", [
    ("/params", "missing group /params"),
    ("/optimizer", "missing group /optimizer"),
    ("/rng_state", "missing group /rng_state"),
    ("@step", "missing root attribute 'step'"),
    ("@config", "missing root attribute 'config'"),
])
def test_missing_field(tmp_path, remove, match):
    path = tmp_path / "c.h5"
    save_checkpoint(path, **sample_state())
    with h5py.File(path, "r+") as f:
        if remove.startswith("@"):
            del f.attrs[remove[1:]]
        else:
            del f[remove]
    with pytest.raises(ValueError, match=escaped(path) + ".*" + match):
        load_checkpoint(path)


def test_unknown_leaf_kind(tmp_path):
    path = tmp_path / "c.h5"
    save_checkpoint(path, **sample_state())
    with h5py.File(path, "r+") as f:
        f["rng_state/seed"].attrs["kind"] = "complex"
    with pytest.raises(ValueError, match=escaped(path) + ".*/rng_state/seed has kind 'complex'"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# check_finite

def test_check_finite_names_the_first_bad_array(tmp_path):
    state = sample_state()
    save_checkpoint(tmp_path / "c.h5", **state)
    ckpt = load_checkpoint(tmp_path / "c.h5")
    ckpt.check_finite()                              # a healthy state passes

    ckpt.optimizer["v"]["dec_W"][2, 1, 4] = np.inf
    ckpt.optimizer["v"]["enc_b1"][3] = np.nan
    with pytest.raises(ValueError, match=r"optimizer/v/enc_b1: 1 non-finite values "
                                         r"\(first at index \(3,\)"):
        ckpt.check_finite()
    ckpt.params["enc_W1"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^params/enc_W1"):
        ckpt.check_finite()


def test_check_finite_eps():
    ckpt = Checkpoint(params={}, optimizer={}, step=0, epoch=0, eps=float("nan"),
                      rng_state={}, config={})
    with pytest.raises(ValueError, match="eps is not finite"):
        ckpt.check_finite()
