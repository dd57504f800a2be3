"""dvae_cupy.checkpoint: exact round trips, checksums and digests on every array and field,
version 1 files still readable, atomic writes that survive a crash mid-write, and errors that
name the file and the damaged item (CorruptFileError, never an h5py traceback).

The byte-flip sweeps are in test_checkpoint_damage.py; full disks and read-only folders in
test_faults_files.py."""
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from checkpoint_samples import assert_checkpoint_equals, sample_state, trainer_state

from dvae_cupy.checkpoint import (FORMAT, VERSION, Checkpoint, checkpoint_problem,
                                  load_checkpoint, save_checkpoint)
from dvae_cupy.errors import CorruptFileError

# Written by save_checkpoint of format version 1 (commit 587ce98, before the checksums) with
# the arguments v1_state() returns.
V1_FILE = Path(__file__).parent / "data" / "checkpoint_v1.h5"


def v1_state():
    state = trainer_state(3)
    state["rng_state"]["numpy"] = np.random.default_rng(1234).bit_generator.state  # 128-bit ints
    state["extra"]["unset"] = None
    state["extra"]["improved"] = True
    return state


def escaped(path):
    """A file name as a literal for pytest.raises(match=...)."""
    return re.escape(str(path))


@pytest.fixture
def saved(tmp_path):
    """A version 2 checkpoint of sample_state() and its path."""
    path = tmp_path / "c.h5"
    save_checkpoint(path, **sample_state())
    return path


# ------------------------------------------------------------------------------------------------
# Round trip

def test_round_trip_is_exact(saved):
    ckpt = load_checkpoint(saved)
    assert isinstance(ckpt, Checkpoint)
    assert_checkpoint_equals(ckpt, sample_state())
    assert list(ckpt.optimizer) == ["m", "v"]
    assert type(ckpt.step) is int and type(ckpt.eps) is float
    with h5py.File(saved, "r") as f:
        assert f.attrs["format"].decode() == FORMAT and f.attrs["version"] == VERSION == 2


def test_trainer_extras_round_trip_exactly(tmp_path):
    """The interrupted epoch's loss sum (float), its step count (int), the data set's digest
    (str): the resumed epoch's mean and the data check depend on them being exact."""
    state = trainer_state()
    state["extra"]["epoch_loss_sum"] = 0.1 + 0.2                # not a short decimal
    state["extra"]["tiny"] = 5e-324                             # a subnormal
    state["extra"]["huge_count"] = 2**63 - 1
    save_checkpoint(tmp_path / "c.h5", **state)
    ckpt = load_checkpoint(tmp_path / "c.h5")
    assert_checkpoint_equals(ckpt, state)
    extra = ckpt.extra
    assert type(extra["epoch_loss_sum"]) is float and extra["epoch_loss_sum"] == 0.1 + 0.2
    assert type(extra["epoch_steps"]) is int and extra["epoch_steps"] == 34
    assert extra["dataset_digest"] == state["extra"]["dataset_digest"]


def test_int_leaves_are_int64_and_wider_ones_are_refused(tmp_path):
    save_checkpoint(tmp_path / "c.h5", **sample_state())
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["rng_state/seed"].dtype == np.int64 and f["rng_state/seed"].shape == ()
    state = sample_state()
    state["rng_state"]["numpy"] = np.random.default_rng(0).bit_generator.state  # 128-bit
    with pytest.raises(ValueError, match=r"rng_state/numpy/state/state = \d+ does not fit in "
                                         r"int64; store larger integers as a str or a uint64"):
        save_checkpoint(tmp_path / "d.h5", **state)
    assert not (tmp_path / "d.h5").exists()


def test_extra_none_stays_none_and_overwrite_replaces(tmp_path):
    path = tmp_path / "c.h5"
    save_checkpoint(path, **sample_state())
    state = dict(sample_state(1), extra=None, step=99)
    save_checkpoint(path, **state)
    ckpt = load_checkpoint(path)
    assert ckpt.extra is None and ckpt.step == 99
    assert_checkpoint_equals(ckpt, state)


def test_no_string_is_variable_length(saved):
    """Variable-length strings live in HDF5's global heap, which has no checksum (and whose
    damage made HDF5 loop forever in the byte-flip sweep): none may be written."""
    checked = 0
    with h5py.File(saved, "r") as f:
        def check(name, item):
            nonlocal checked
            types = [(f"{name}@{a}", item.attrs.get_id(a).dtype) for a in item.attrs]
            if isinstance(item, h5py.Dataset):
                types.append((name, item.dtype))
            for where, dtype in types:
                assert h5py.check_vlen_dtype(dtype) is None, where
                string = h5py.check_string_dtype(dtype)
                assert string is None or string.length is not None, where
                checked += 1
        check("/", f)
        f.visititems(check)
    assert checked >= 40                              # every attribute and dataset seen


def test_every_dataset_that_can_be_filtered_is_checksummed(saved):
    seen = {"checksummed": 0, "scalar": 0}
    with h5py.File(saved, "r") as f:
        def visit(name, item):
            if isinstance(item, h5py.Dataset):
                if item.shape == ():     # HDF5 cannot chunk or filter 0-d datasets
                    assert not item.fletcher32, name
                    seen["scalar"] += 1
                else:
                    assert item.fletcher32, name
                    seen["checksummed"] += 1
        f.visititems(visit)
        for name in ("arrays_digest", "fields_digest"):
            assert re.fullmatch("[0-9a-f]{64}", f.attrs[name].decode())
    assert seen["checksummed"] > 15 and seen["scalar"] > 5


# ------------------------------------------------------------------------------------------------
# Version 1 files

def test_version_1_file_still_loads():
    with h5py.File(V1_FILE, "r") as f:
        assert f.attrs["version"] == 1 and "arrays_digest" not in f.attrs
    ckpt = load_checkpoint(V1_FILE)
    assert_checkpoint_equals(ckpt, v1_state())
    assert checkpoint_problem(V1_FILE) is None


def test_version_1_structural_damage_is_a_corrupt_file_error(tmp_path):
    path = tmp_path / "old.h5"
    shutil.copy(V1_FILE, path)
    with h5py.File(path, "r+") as f:
        f["rng_state/seed"][()] = "12x"          # an int leaf that is not a decimal
    with pytest.raises(CorruptFileError, match=escaped(path) + r".*/rng_state/seed is '12x', "
                                                               r"expected a decimal integer"):
        load_checkpoint(path)


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
    assert_checkpoint_equals(load_checkpoint(path), old)


def test_bad_value_leaves_no_file(tmp_path):
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
# Bad arguments: ValueError, nothing written

@pytest.mark.parametrize("change, match", [
    ({"step": 1.5}, "step must be an integer"),
    ({"epoch": True}, "epoch must be an integer"),
    ({"step": 2**63}, "step = 9223372036854775808 does not fit in int64"),
    ({"config": {"f": object()}}, "config is not JSON-serialisable"),
    ({"config": {"x": float("nan")}}, "config is not JSON-serialisable"),
    ({"params": {"a/b": np.zeros(2)}}, r"params: key 'a/b'"),
    ({"params": {"w": np.array(["x"])}}, r"params/w: arrays must be"),
    ({"optimizer": {"m": [1.0]}}, r"optimizer/m must be a dict"),
    ({"rng_state": {"s": object()}}, r"rng_state/s: cannot store"),
    ({"rng_state": 42}, "rng_state must be a dict"),
    ({"extra": [1.0]}, "extra must be a dict"),
    ({"extra": {"s": "\ud800"}}, r"extra/s: string is not valid Unicode"),
    ({"extra": {"n": -2**63 - 1}}, r"extra/n = -9223372036854775809 does not fit in int64"),
])
def test_bad_arguments_are_named(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "c.h5", **dict(sample_state(), **change))
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# Bad files: CorruptFileError naming the file and the item

def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=escaped(path)):
        load_checkpoint(path)
    assert checkpoint_problem(path) == f"{path}: no such file; expected a {FORMAT} HDF5 file"


def test_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CorruptFileError, match=escaped(tmp_path) + ": is a folder"):
        load_checkpoint(tmp_path)


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("step=3\n")
    with pytest.raises(CorruptFileError, match=escaped(path) + ": not an HDF5 file"):
        load_checkpoint(path)


def test_truncated_file(saved):
    size = saved.stat().st_size
    with open(saved, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(CorruptFileError, match=escaped(saved) + ".*truncated or corrupt"):
        load_checkpoint(saved)


def test_wrong_format_attribute(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "dvae_cupy.dataset"
    with pytest.raises(CorruptFileError,
                       match=escaped(path) + ": format attribute is 'dvae_cupy.dataset'"):
        load_checkpoint(path)


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.attrs.__delitem__("step"), "missing root attribute 'step'"),
    (lambda f: f.attrs.__delitem__("config"), "missing root attribute 'config'"),
    (lambda f: f.attrs.__delitem__("arrays_digest"), "missing root attribute 'arrays_digest'"),
    (lambda f: f.attrs.__delitem__("fields_digest"), "missing root attribute 'fields_digest'"),
    (lambda f: f.__delitem__("params"), "missing group /params"),
    (lambda f: f.__delitem__("optimizer"), "missing group /optimizer"),
    (lambda f: f.__delitem__("rng_state"), "missing group /rng_state"),
    (lambda f: f.attrs.__setitem__("version", 3), "unsupported version 3, this reader knows "
                                                  "versions 1, 2"),
    (lambda f: f.attrs.__setitem__("step", "12"), "root attribute 'step' is a string, expected "
                                                  "one int"),
    (lambda f: f.attrs.__setitem__("eps", np.zeros(2)), r"root attribute 'eps' is a float64 "
                                                        r"array of shape \(2,\), expected one"),
    (lambda f: f.attrs.__setitem__("config", "{"), "config attribute is not valid JSON"),
    (lambda f: f.attrs.__setitem__("config", "[1]"), "config attribute is a JSON list"),
    (lambda f: f["rng_state/seed"].attrs.__setitem__("kind", "complex"),
     r"/rng_state/seed has kind 'complex'"),
    (lambda f: f["rng_state/seed"].attrs.__delitem__("kind"), r"/rng_state/seed has kind None"),
    (lambda f: f.create_group("params/sub"), "/params/sub is a group, expected a dataset"),
    (lambda f: f.__setitem__("params/text", "hello"),
     "/params/text is a string, expected a bool, integer or"),
    (lambda f: f.__setitem__("extra/count", 1.5) or f["extra/count"].attrs.__setitem__(
        "kind", "int"), r"/extra/count is a float64 value, expected one int"),
])
def test_damaged_metadata_is_named(saved, edit, match):
    with h5py.File(saved, "r+") as f:
        edit(f)
    with pytest.raises(CorruptFileError, match=escaped(saved) + ": .*" + match):
        load_checkpoint(saved)


def test_broken_link_is_named_not_an_attribute_error(saved):
    """The link of an object HDF5 cannot open: h5py's .items() gives None for it, which made the
    old error-message code raise AttributeError: 'NoneType' object has no attribute 'name'."""
    with h5py.File(saved, "r+") as f:
        f["params/enc_b1_link"] = h5py.SoftLink("/nowhere")
    with pytest.raises(CorruptFileError, match=escaped(saved) + ": /params/enc_b1_link is "
                                                                "unreadable, damaged"):
        load_checkpoint(saved)


def test_broken_link_in_a_version_1_file(tmp_path):
    path = tmp_path / "old.h5"
    shutil.copy(V1_FILE, path)
    with h5py.File(path, "r+") as f:
        f["extra/lost"] = h5py.ExternalLink("missing.h5", "/x")
    with pytest.raises(CorruptFileError, match=escaped(path) + ": /extra/lost is unreadable"):
        load_checkpoint(path)


@pytest.mark.parametrize("edit, digest", [
    # h5py rewrites the Fletcher-32 checksum of what it writes: only the digests see these.
    (lambda f: f["params/enc_W1"].__setitem__((3, 4), 1.0), "arrays_digest"),
    (lambda f: f["optimizer/v/scale"].__setitem__((), 2.0), "arrays_digest"),
    (lambda f: f.move("params/dec_W", "params/dec_X"), "arrays_digest"),
    (lambda f: f.__delitem__("optimizer/m/counts"), "arrays_digest"),
    (lambda f: f.attrs.__setitem__("step", np.int64(12346)), "fields_digest"),
    (lambda f: f.attrs.__setitem__("eps", np.float64(0.2)), "fields_digest"),
    (lambda f: f["extra/best_epoch"].__setitem__((), 4), "fields_digest"),
    (lambda f: f["rng_state/key"].__setitem__(0, 9), "fields_digest"),
    (lambda f: f.__delitem__("extra/unset"), "fields_digest"),
    (lambda f: f.__delitem__("extra"), "fields_digest"),
])
def test_consistent_edits_are_caught_by_the_digests(saved, edit, digest):
    with h5py.File(saved, "r+") as f:
        edit(f)
    with pytest.raises(CorruptFileError, match=escaped(saved) + f": {digest} does not match the "
                                                                f"file's contents"):
        load_checkpoint(saved)


def test_checkpoint_problem_says_what_is_wrong_without_raising(saved, tmp_path):
    assert checkpoint_problem(saved) is None
    with h5py.File(saved, "r+") as f:
        f["params/counts"][0] += 1
    problem = checkpoint_problem(saved)
    assert problem.startswith(f"{saved}: arrays_digest does not match")
    (tmp_path / "junk.h5").write_bytes(b"\0" * 100)
    assert "not an HDF5 file" in checkpoint_problem(tmp_path / "junk.h5")


# ------------------------------------------------------------------------------------------------
# check_finite

def test_check_finite_names_the_first_bad_array(saved):
    ckpt = load_checkpoint(saved)
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

