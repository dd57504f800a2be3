"""Checkpoint contents for the tests (test_checkpoint.py, test_checkpoint_damage.py,
test_faults_files.py), and the exact comparison that says a loaded checkpoint is the one saved."""
import numpy as np

# The parameter shapes of a small model (ModelShape(n_latent=2, n_categories=3, hidden=6,
# pixels=20)): the names and layout the trainer stores, at a size that keeps files small.
SMALL_MODEL = {"enc_w1": (20, 6), "enc_b1": (6,), "enc_w2": (6, 6), "enc_b2": (6,),
               "dec_w1": (6, 6), "dec_b1": (6,), "dec_w2": (6, 20), "dec_b2": (20,)}


def sample_state(seed=0):
    """A checkpoint's worth of arguments with every kind of value the format promises to keep."""
    rng = np.random.default_rng(seed)
    params = {
        "enc_W1": rng.standard_normal((784, 30)).astype(np.float32),
        "enc_b1": rng.standard_normal(30),                       # float64
        "dec_W": rng.standard_normal((7, 3, 5)).astype(np.float32),
        "counts": rng.integers(-5, 5, size=(4,), dtype=np.int64),
        "scale": np.float32(0.5) * np.ones((), np.float32),      # 0-d
        "empty": np.zeros((0, 3), np.float32),
    }
    optimizer = {slot: {k: rng.standard_normal(v.shape).astype(v.dtype)
                        for k, v in params.items()} for slot in ("m", "v")}
    rng_state = {
        "seed": 2**63 - 1,                                      # the largest int64
        "counter": np.uint64(17),
        "key": np.arange(4, dtype=np.uint32),
        "state": np.array([2**64 - 1, 12345], np.uint64),       # wide integers go in arrays
        "empty": {},
    }
    config = {"latent": [30, 10], "eps": {"start": 1.0, "schedule": [[0, 1.0], [100, 0.5]]},
              "dataset": "fashion-mnist", "dynamic": False, "note": None}
    extra = {"best_valid_loss": 101.25, "best_epoch": 3, "improved": True, "name": "run-1",
             "unset": None, "history": np.array([120.0, 110.5, 101.25]), "text": "héllo ✓"}
    return dict(params=params, optimizer=optimizer, step=12345, epoch=7, eps=0.1,
                rng_state=rng_state, config=config, extra=extra)


def trainer_state(seed=0):
    """What the trainer stores, for a small model: Adam moments, Philox counters, its extras
    (the interrupted epoch's loss sum and step count, the data set's digest)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in SMALL_MODEL.items()}
    optimizer = {"m": {k: (0.01 * rng.standard_normal(v.shape)).astype(np.float32)
                       for k, v in params.items()},
                 "v": {k: (1e-4 * rng.random(v.shape)).astype(np.float32)
                       for k, v in params.items()}}
    rng_state = {"scheme": "philox4x32-10(seed, step); shuffle default_rng([seed, epoch])",
                 "seed": 7, "step": 1234}
    config = {"dataset": "fashion-mnist", "n_latent": 2, "n_categories": 3, "hidden": 6,
              "epochs": 10, "lr": 0.001, "eps0": 1.0, "eps_min": 0.1, "out": "runs/a"}
    extra = {"step_in_epoch": 34, "adam_steps": 1234, "best_valid": 201.53125,
             "epoch_loss_sum": 6843.957122802734, "epoch_steps": 34,
             "dataset_digest": "sha256:" + "0123456789abcdef" * 4,
             "metrics_json": '[{"epoch": 1, "step": 600, "train_loss": 240.1}]'}
    return dict(params=params, optimizer=optimizer, step=1234, epoch=2, eps=0.98779,
                rng_state=rng_state, config=config, extra=extra)


def assert_arrays_equal(got, want):
    """Same names in the same order, same dtypes, shapes and bits."""
    assert list(got) == list(want)
    for name in want:
        assert isinstance(got[name], np.ndarray), name
        assert got[name].dtype == np.asarray(want[name]).dtype, name
        assert got[name].shape == np.asarray(want[name]).shape, name
        assert got[name].tobytes() == np.asarray(want[name]).tobytes(), name


def assert_trees_equal(got, want):
    """Nested dicts: same keys in order, ints as Python ints of the same value, arrays bit-equal,
    floats bit-equal."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for key in want:
            assert_trees_equal(got[key], want[key])
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
    else:
        plain = want.item() if isinstance(want, np.generic) else want
        assert type(got) is type(plain) and got == plain
        if isinstance(plain, float):
            assert np.float64(got).tobytes() == np.float64(plain).tobytes()


def assert_checkpoint_equals(ckpt, state):
    """Every array and field of the loaded `ckpt` equals `state` (save_checkpoint's arguments)
    exactly: names, order, dtypes, shapes, bits, types."""
    assert_arrays_equal(ckpt.params, state["params"])
    assert list(ckpt.optimizer) == list(state["optimizer"])
    for slot in state["optimizer"]:
        assert_arrays_equal(ckpt.optimizer[slot], state["optimizer"][slot])
    assert_trees_equal(ckpt.step, state["step"])
    assert_trees_equal(ckpt.epoch, state["epoch"])
    assert_trees_equal(ckpt.eps, float(state["eps"]))
    assert ckpt.config == state["config"]
    assert_trees_equal(ckpt.rng_state, state["rng_state"])
    if state.get("extra") is None:
        assert ckpt.extra is None
    else:
        assert_trees_equal(ckpt.extra, state["extra"])


def checkpoint_differences(ckpt, state):
    """None when `ckpt` equals `state` exactly, else the first difference found (a string)."""
    try:
        assert_checkpoint_equals(ckpt, state)
    except AssertionError as err:
        return str(err) or "differs"
    return None
