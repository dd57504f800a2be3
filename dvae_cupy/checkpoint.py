"""Training checkpoints in HDF5, written atomically, read back exactly.

A checkpoint is everything needed to resume training bit for bit: parameters, optimizer slots,
step/epoch counters, the current eps, the random stream's state, the run's configuration, and
free-form extras (best valid loss, metrics).

HDF5 layout (version 1):
  root attrs   format = "dvae_cupy.checkpoint", version = 1, step, epoch, eps,
               config = the config dict as a JSON string
  /params/<name>              one dataset per parameter array (dtype and shape as given)
  /optimizer/<slot>/<name>    one dataset per optimizer array, e.g. slots "m" and "v" of Adam
  /rng_state, /extra          trees (/extra only when extra is not None): a dict is a group,
                              a leaf is a dataset whose attr "kind" says how to read it back:
                              "array" as is; "int" a decimal string (PCG64 states are 128-bit);
                              "float", "bool", "str", "none".
Groups keep insertion order, so dicts come back in the order they were given.

Writing goes to `path + ".tmp-<pid>"` in the same directory, is fsynced, then os.replace'd
over `path`: a crash mid-write leaves the previous checkpoint untouched.
"""
import json
import math
import os
from dataclasses import dataclass

import h5py
import numpy as np

from .atomic import atomic_path
from .hdf5_format import check_format

FORMAT = "dvae_cupy.checkpoint"
VERSION = 1
LEAF_KINDS = ("array", "int", "float", "bool", "str", "none")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the arguments of `save_checkpoint`, arrays as NumPy."""
    params: dict
    optimizer: dict
    step: int
    epoch: int
    eps: float
    rng_state: dict
    config: dict
    extra: dict | None = None

    def check_finite(self):
        """Raise ValueError naming the first parameter or optimizer array (or eps) holding a
        NaN or inf. Loading does not call this: whether to refuse such a state is the
        trainer's choice (it may want to inspect a run that diverged)."""
        arrays = [(f"params/{k}", v) for k, v in self.params.items()]
        arrays += [(f"optimizer/{slot}/{k}", v)
                   for slot, group in self.optimizer.items() for k, v in group.items()]
        for name, array in arrays:
            bad = ~np.isfinite(array)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"{name}: {int(bad.sum())} non-finite values "
                                 f"(first at index {first}: {array[first]})")
        if not math.isfinite(self.eps):
            raise ValueError(f"eps is not finite: {self.eps}")


# ------------------------------------------------------------------------------------------------
# Writing

def save_checkpoint(path, *, params, optimizer, step, epoch, eps, rng_state, config,
                    extra=None):
    """Write a checkpoint to `path` atomically (see the module docstring for the layout).

    params: {name: array}; optimizer: {slot: {name: array}}; rng_state and extra: nested dicts
    of ints (any size), floats, bools, strings, None and NumPy arrays; config: a JSON-
    serialisable dict. Arrays must be NumPy (move CuPy arrays to the host with .get() first).
    """
    path = os.fspath(path)
    config_json = _config_json(config)
    for name, tree in (("rng_state", rng_state), ("extra", {} if extra is None else extra)):
        if not isinstance(tree, dict):
            raise ValueError(f"{name} must be a dict; got {type(tree).__name__}")
    with atomic_path(path, durable=True) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["step"] = _as_int(step, "step")
            f.attrs["epoch"] = _as_int(epoch, "epoch")
            f.attrs["eps"] = float(eps)
            f.attrs["config"] = config_json
            _write_arrays(f.create_group("params", track_order=True), params, "params")
            opt = f.create_group("optimizer", track_order=True)
            for slot, arrays in _items(optimizer, "optimizer"):
                _write_arrays(opt.create_group(slot, track_order=True), arrays,
                              f"optimizer/{slot}")
            _write_tree(f, "rng_state", rng_state, "rng_state")
            if extra is not None:
                _write_tree(f, "extra", extra, "extra")


def _config_json(config):
    """config as a JSON string; NaN/inf are refused since JSON has no spelling for them."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict; got {type(config).__name__}")
    try:
        return json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config is not JSON-serialisable: {err}") from err


def _as_int(value, name):
    """A Python int from an int-like value (bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    return int(value)


def _items(mapping, where):
    """(key, value) pairs of a dict whose keys can name HDF5 objects."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a dict; got {type(mapping).__name__}")
    for key in mapping:
        if not isinstance(key, str) or not key or "/" in key or key == ".":
            raise ValueError(f"{where}: key {key!r} must be a non-empty string without '/'")
    return mapping.items()


def _write_arrays(group, arrays, where):
    """One dataset per array of the dict `arrays`."""
    for name, value in _items(arrays, where):
        group.create_dataset(name, data=_as_numpy(value, f"{where}/{name}"))


def _as_numpy(value, where):
    """A numeric NumPy array, or ValueError naming `where`."""
    try:
        array = np.asarray(value)
    except TypeError as err:     # CuPy refuses implicit conversion
        raise ValueError(f"{where}: cannot convert to a NumPy array ({err}); "
                         f"move device arrays to the host first") from err
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{where}: arrays must be bool, integer or float; got {array.dtype}")
    return array


def _write_tree(parent, name, value, where):
    """Store `value` as parent[name]: a dict as a group, anything else as one tagged leaf."""
    if isinstance(value, dict):
        group = parent.create_group(name, track_order=True)
        for key, item in _items(value, where):
            _write_tree(group, key, item, f"{where}/{key}")
        return
    kind, data = _leaf(value, where)
    dataset = parent.create_dataset(name, data=data)
    dataset.attrs["kind"] = kind


def _leaf(value, where):
    """(kind, data to store) for one leaf; checked in this order because bool is an int."""
    if value is None:
        return "none", np.zeros(0, np.uint8)
    if isinstance(value, (bool, np.bool_)):
        return "bool", np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return "int", str(int(value))
    if isinstance(value, (float, np.floating)):
        return "float", np.float64(value)
    if isinstance(value, str):
        return "str", value
    if isinstance(value, np.ndarray):
        return "array", _as_numpy(value, where)
    raise ValueError(f"{where}: cannot store a {type(value).__name__}; expected a dict, int, "
                     f"float, bool, str, None or NumPy array (store sequences as arrays)")




# ------------------------------------------------------------------------------------------------
# Reading

def load_checkpoint(path):
    """Read and validate a checkpoint; errors name the file and what is missing or wrong."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file; expected a {FORMAT} HDF5 file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            return _read_layout(f, path)
    except OSError as err:       # h5py reports truncated or corrupt files as OSError
        raise ValueError(f"{path}: unreadable HDF5 file, truncated or corrupt ({err})") from err


def _read_layout(f, path):
    """The Checkpoint in the open file `f`, every field checked present."""
    check_format(f, path, FORMAT, VERSION)
    for attr in ("step", "epoch", "eps", "config"):
        if attr not in f.attrs:
            raise ValueError(f"{path}: missing root attribute {attr!r}")
    try:
        config = json.loads(f.attrs["config"])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: config attribute is not valid JSON ({err})") from err
    optimizer = _group(f, "optimizer", path)
    return Checkpoint(
        params=_read_arrays(_group(f, "params", path), path),
        optimizer={slot: _read_arrays(_group(optimizer, slot, path), path)
                   for slot in optimizer},
        step=int(f.attrs["step"]),
        epoch=int(f.attrs["epoch"]),
        eps=float(f.attrs["eps"]),
        rng_state=_read_tree(_group(f, "rng_state", path), path),
        config=config,
        extra=_read_tree(f["extra"], path) if "extra" in f else None,
    )


def _group(parent, name, path):
    """parent[name], which must be a group."""
    group = parent.get(name)
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{path}: missing group {parent.name.rstrip('/')}/{name}")
    return group


def _read_arrays(group, path):
    """{name: array} of a group holding only datasets."""
    arrays = {}
    for name, item in group.items():
        if not isinstance(item, h5py.Dataset):
            raise ValueError(f"{path}: {item.name} is a group, expected an array")
        arrays[name] = np.asarray(item[()])     # 0-d datasets read as scalars
    return arrays


def _read_tree(item, path):
    """The inverse of _write_tree."""
    if isinstance(item, h5py.Group):
        return {name: _read_tree(child, path) for name, child in item.items()}
    kind = item.attrs.get("kind")
    if kind not in LEAF_KINDS:
        raise ValueError(f"{path}: {item.name} has kind {kind!r}, expected one of {LEAF_KINDS}")
    data = item[()]
    if kind == "array":
        return np.asarray(data)
    if kind == "none":
        return None
    if kind == "bool":
        return bool(data)
    if kind == "float":
        return float(data)
    text = data.decode() if isinstance(data, bytes) else str(data)
    return int(text) if kind == "int" else text
