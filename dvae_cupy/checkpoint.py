"""Training checkpoints in HDF5: written atomically, checksummed, read back exactly or refused.

A checkpoint is everything needed to resume training bit for bit: parameters, optimizer slots,
step/epoch counters, the current eps, the random stream's state, the run's configuration, and
free-form extras (best valid loss, metrics, the interrupted epoch's loss sum, ...).

HDF5 layout (version 2):
  root attrs   format = "dvae_cupy.checkpoint", version = 2, step, epoch, eps,
               config = the config dict as a JSON string,
               arrays_digest, fields_digest (see "Integrity")
               (every string attribute fixed-length UTF-8, see "Integrity")
  /params/<name>              one dataset per parameter array (dtype and shape as given)
  /optimizer/<slot>/<name>    one dataset per optimizer array, e.g. slots "m" and "v" of Adam
  /rng_state, /extra          trees (/extra only when extra is not None): a dict is a group,
                              a leaf is a dataset whose attr "kind" says how to read it back:
                              "array" as is; "int" an int64 scalar; "float" a float64 scalar;
                              "bool"; "str" its UTF-8 bytes as a uint8 array; "none" (an
                              empty uint8 array).
Groups keep insertion order, so dicts come back in the order they were given.

Integrity (version 2). Every dataset HDF5 can filter (all but 0-d ones) carries HDF5's
Fletcher-32 checksum, verified by HDF5 on every read; the file is written with object headers,
B-trees and heaps of HDF5 >= 1.10 formats, whose metadata HDF5 checksums too. No string is
variable-length: HDF5 keeps those in its "global heap", which has no checksum, and a damaged
global heap can make HDF5 2.0 loop forever while reading an attribute (found by the byte-flip
sweep). Two sha256 digests cover the contents themselves, including what no checksum can
(the values of 0-d datasets, which HDF5 cannot filter):
  arrays_digest   every params and optimizer array in the order written (params in dict order,
                  then each optimizer slot's arrays): its name ("params/enc_w1",
                  "optimizer/m/enc_w1"), dtype, shape and bytes;
  fields_digest   step, epoch, eps, config, and every node of rng_state and extra (path, kind
                  and value), or the absence of extra.
Loading checks both. Any failed check, unreadable object, missing or mistyped field raises
CorruptFileError naming the file and the item; a checkpoint that loads is the one written.

Version 1 files (written before the checksums) still load: their arrays and fields come back as
before, with each object's type and presence checked. What they cannot get: no checksum and no
digest, so damage to array bytes, to names or to scalar values goes unnoticed, and their
metadata (HDF5's older formats) has no checksums either, and its strings are variable-length
(a damaged one may make HDF5 hang, see above). Version 1 stored "int" leaves as decimal strings
(of any size); version 2 stores int64 and refuses larger integers.

Writing builds the file in memory, then writes its bytes to `path + ".tmp-<pid>"` in the same
directory, fsyncs it and os.replace's it over `path` (atomic_hdf5.py, atomic.py): a crash or a
failed write (a full disk included) leaves the previous checkpoint untouched, and HDF5 itself
never meets the disk's errors.
"""
import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass

import h5py
import numpy as np

from .atomic_hdf5 import atomic_hdf5
from .errors import CorruptFileError

FORMAT = "dvae_cupy.checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
LEAF_KINDS = ("array", "int", "float", "bool", "str", "none")
# h5py's errors for objects it cannot read: OSError (HDF5's checksum and format checks),
# KeyError (a link whose object cannot be opened), ValueError/TypeError/RuntimeError (datatypes,
# dataspaces or strings it cannot make sense of; UnicodeDecodeError is a ValueError).
_H5PY_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)
_INT64 = np.iinfo(np.int64)


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
        for name, array in _named_arrays(self.params, self.optimizer):
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
    of ints (int64 range), floats, bools, strings, None and NumPy arrays; config: a JSON-
    serialisable dict. Arrays must be NumPy (move CuPy arrays to the host with .get() first).
    Bad arguments raise ValueError before anything is written; a failed write raises OSError
    naming `path` and the cause (atomic.py), leaving the previous file as it was.
    """
    path = os.fspath(path)
    fields = _checked_fields(step, epoch, eps, config, rng_state, extra)
    params = {name: _as_numpy(value, f"params/{name}")
              for name, value in _items(params, "params")}
    optimizer = {slot: {name: _as_numpy(value, f"optimizer/{slot}/{name}")
                        for name, value in _items(arrays, f"optimizer/{slot}")}
                 for slot, arrays in _items(optimizer, "optimizer")}
    arrays_digest = _arrays_digest(params, optimizer)
    # libver: HDF5 >= 1.10 object formats, whose metadata blocks carry checksums.
    with atomic_hdf5(path, durable=True, track_order=True, libver=("v110", "latest")) as f:
        _set_text(f, "format", FORMAT)
        f.attrs["version"] = VERSION
        f.attrs["step"] = np.int64(fields["step"])
        f.attrs["epoch"] = np.int64(fields["epoch"])
        f.attrs["eps"] = np.float64(fields["eps"])
        _set_text(f, "config", fields["config"])
        _set_text(f, "arrays_digest", arrays_digest)
        _set_text(f, "fields_digest", _fields_digest(fields))
        _write_arrays(f.create_group("params", track_order=True), params)
        opt = f.create_group("optimizer", track_order=True)
        for slot, arrays in optimizer.items():
            _write_arrays(opt.create_group(slot, track_order=True), arrays)
        _write_tree(f, "rng_state", rng_state)
        if extra is not None:
            _write_tree(f, "extra", extra)


def _checked_fields(step, epoch, eps, config, rng_state, extra):
    """The non-array fields, checked and in the form they are stored and digested in."""
    for name, tree in (("rng_state", rng_state), ("extra", {} if extra is None else extra)):
        if not isinstance(tree, dict):
            raise ValueError(f"{name} must be a dict; got {type(tree).__name__}")
        _leaves(name, tree)  # every leaf storable, or ValueError naming it
    return {"step": _as_int(step, "step"), "epoch": _as_int(epoch, "epoch"),
            "eps": float(eps), "config": _config_json(config),
            "rng_state": rng_state, "extra": extra}


def _config_json(config):
    """config as a JSON string; NaN/inf are refused since JSON has no spelling for them."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict; got {type(config).__name__}")
    try:
        return json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config is not JSON-serialisable: {err}") from err


def _as_int(value, name):
    """A Python int in int64's range from an int-like value (bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if not _INT64.min <= int(value) <= _INT64.max:
        raise ValueError(f"{name} = {int(value)} does not fit in int64; "
                         f"store larger integers as a str or a uint64 array")
    return int(value)


def _items(mapping, where):
    """(key, value) pairs of a dict whose keys can name HDF5 objects."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a dict; got {type(mapping).__name__}")
    for key in mapping:
        if not isinstance(key, str) or not key or "/" in key or key == ".":
            raise ValueError(f"{where}: key {key!r} must be a non-empty string without '/'")
    return mapping.items()


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


def _write_arrays(group, arrays):
    """One checksummed dataset per array of the dict `arrays`."""
    for name, array in arrays.items():
        _create_dataset(group, name, array)


def _create_dataset(group, name, data):
    """group[name] = data, with the Fletcher-32 filter wherever HDF5 allows one (not on 0-d
    datasets, which cannot be chunked: the digests cover those)."""
    data = np.asarray(data)
    return group.create_dataset(name, data=data, fletcher32=data.ndim > 0)


def _set_text(item, name, text):
    """A string attribute, fixed-length UTF-8 (kept in the checksummed object header, never in
    the global heap). Our texts hold no NUL, which fixed-length strings cannot end with."""
    encoded = text.encode("utf-8")
    item.attrs.create(name, np.bytes_(encoded),
                      dtype=h5py.string_dtype("utf-8", max(1, len(encoded))))


def _write_tree(parent, name, value):
    """Store `value` as parent[name]: a dict as a group, anything else as one tagged leaf."""
    if isinstance(value, dict):
        group = parent.create_group(name, track_order=True)
        for key, item in value.items():
            _write_tree(group, key, item)
        return
    kind, data = _leaf(value, name)
    _set_text(_create_dataset(parent, name, data), "kind", kind)


def _leaf(value, where):
    """(kind, data as stored) for one leaf; checked in this order because bool is an int."""
    if value is None:
        return "none", np.zeros(0, np.uint8)
    if isinstance(value, (bool, np.bool_)):
        return "bool", np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return "int", np.int64(_as_int(value, where))
    if isinstance(value, (float, np.floating)):
        return "float", np.float64(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{where}: string is not valid Unicode ({err})") from err
        return "str", _utf8(value)
    if isinstance(value, np.ndarray):
        return "array", _as_numpy(value, where)
    raise ValueError(f"{where}: cannot store a {type(value).__name__}; expected a dict, int, "
                     f"float, bool, str, None or NumPy array (store sequences as arrays)")


# ------------------------------------------------------------------------------------------------
# Digests

def _named_arrays(params, optimizer):
    """("params/<name>" or "optimizer/<slot>/<name>", array) in the order they are written."""
    named = [(f"params/{name}", array) for name, array in params.items()]
    named += [(f"optimizer/{slot}/{name}", array)
              for slot, arrays in optimizer.items() for name, array in arrays.items()]
    return named


def _hash_entry(digest, name, array):
    """Feed one named array to `digest`: name, dtype, shape, byte count, then its bytes."""
    array = np.ascontiguousarray(array)
    header = f"{name}\0{array.dtype.str}\0{array.shape}\0{array.nbytes}\0"
    digest.update(header.encode("utf-8"))
    digest.update(array.tobytes())


def _arrays_digest(params, optimizer):
    """sha256 (hex) of every params and optimizer array: name, dtype, shape, bytes."""
    digest = hashlib.sha256()
    for name, array in _named_arrays(params, optimizer):
        _hash_entry(digest, name, array)
    return digest.hexdigest()


def _leaves(path, tree):
    """(path, kind, stored data) for every node of a tree: dicts as kind "dict", in order."""
    nodes = [(path, "dict", np.zeros(0, np.uint8))]
    for key, item in _items(tree, path):
        if isinstance(item, dict):
            nodes += _leaves(f"{path}/{key}", item)
        else:
            nodes.append((f"{path}/{key}", *_leaf(item, f"{path}/{key}")))
    return nodes


def _fields_digest(fields):
    """sha256 (hex) of step, epoch, eps, config, rng_state and extra as stored."""
    digest = hashlib.sha256()
    _hash_entry(digest, "step", np.int64(fields["step"]))
    _hash_entry(digest, "epoch", np.int64(fields["epoch"]))
    _hash_entry(digest, "eps", np.float64(fields["eps"]))
    _hash_entry(digest, "config", _utf8(fields["config"]))
    nodes = _leaves("rng_state", fields["rng_state"])
    nodes += ([("extra", "absent", np.zeros(0, np.uint8))] if fields["extra"] is None
              else _leaves("extra", fields["extra"]))
    for path, kind, data in nodes:
        _hash_entry(digest, f"{path}\0{kind}", data)
    return digest.hexdigest()


def _utf8(text):
    return np.frombuffer(text.encode("utf-8"), np.uint8)


# ------------------------------------------------------------------------------------------------
# Reading

def load_checkpoint(path):
    """Read and check a checkpoint (version 1 or 2); return a Checkpoint.

    FileNotFoundError when there is no such file; CorruptFileError, naming the file and the
    damaged item, for anything else wrong with it (see the module docstring for the checks).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file; expected a {FORMAT} HDF5 file")
    if os.path.isdir(path):
        raise CorruptFileError(f"{path}: is a folder, expected a {FORMAT} HDF5 file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: permission denied (cannot read it)")
    if not h5py.is_hdf5(path):
        raise CorruptFileError(f"{path}: not an HDF5 file (its signature is missing or damaged)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:       # h5py reports truncated or corrupt files as OSError
        raise CorruptFileError(f"{path}: unreadable HDF5 file, truncated or corrupt "
                               f"({err})") from err
    with f:
        return _read_checkpoint(f, path)


def checkpoint_problem(path):
    """None when `path` is a sound checkpoint (it loads and passes every check), else what is
    wrong with it in words (the message load_checkpoint would raise). Never raises an OSError."""
    try:
        load_checkpoint(path)
    except OSError as err:
        return str(err)
    return None


def _read_checkpoint(f, path):
    """The Checkpoint in the open file `f`, every field checked present, typed and sound."""
    fmt = _root_attr(f, path, "format", "str")
    if fmt != FORMAT:
        raise CorruptFileError(f"{path}: format attribute is {fmt!r}, expected {FORMAT!r}")
    version = _root_attr(f, path, "version", "int")
    if version not in READABLE_VERSIONS:
        raise CorruptFileError(f"{path}: unsupported version {version!r}, this reader knows "
                               f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    fields = {"step": _root_attr(f, path, "step", "int"),
              "epoch": _root_attr(f, path, "epoch", "int"),
              "eps": _root_attr(f, path, "eps", "float"),
              "config": _root_attr(f, path, "config", "str")}
    try:
        config = json.loads(fields["config"])
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{path}: config attribute is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise CorruptFileError(f"{path}: config attribute is a JSON {type(config).__name__}, "
                               f"expected an object")
    params = _read_arrays(_child(f, "params", path, h5py.Group), path)
    optimizer_group = _child(f, "optimizer", path, h5py.Group)
    optimizer = {slot: _read_arrays(_child(optimizer_group, slot, path, h5py.Group), path)
                 for slot in _names(optimizer_group, path)}
    fields["rng_state"] = _read_tree(_child(f, "rng_state", path, h5py.Group), path, version)
    fields["extra"] = (_read_tree(_child(f, "extra", path), path, version)
                       if "extra" in _names(f, path) else None)
    if not isinstance(fields["extra"], (dict, type(None))):
        raise CorruptFileError(f"{path}: /extra is a dataset, expected a group")
    if version >= 2:
        _check_digest(f, path, "arrays_digest", _arrays_digest(params, optimizer),
                      "the params and optimizer arrays (a name, dtype, shape or value changed)")
        _check_digest(f, path, "fields_digest", _fields_digest(fields),
                      "step, epoch, eps, config, rng_state or extra (a value changed)")
    return Checkpoint(params=params, optimizer=optimizer, step=fields["step"],
                      epoch=fields["epoch"], eps=fields["eps"], rng_state=fields["rng_state"],
                      config=config, extra=fields["extra"])


@contextlib.contextmanager
def _reading(path, item):
    """Turn h5py's errors inside the block into CorruptFileError naming `path` and `item`."""
    try:
        yield
    except CorruptFileError:
        raise
    except _H5PY_READ_ERRORS as err:
        raise CorruptFileError(f"{path}: {item} is unreadable, damaged or truncated "
                               f"({type(err).__name__}: {err})") from err


def _root_attr(f, path, name, kind):
    """The root attribute `name`, which must be present and hold one value of `kind`."""
    with _reading(path, f"root attribute {name!r}"):
        present = name in f.attrs
        value = f.attrs[name] if present else None
    if not present:
        raise CorruptFileError(f"{path}: missing root attribute {name!r}")
    return _scalar(value, kind, path, f"root attribute {name!r}")


def _scalar(value, kind, path, item):
    """`value` (as h5py read it) as a Python int, float, bool or str, or CorruptFileError."""
    if kind == "str":
        if isinstance(value, bytes):
            with _reading(path, item):
                value = value.decode("utf-8")
        if isinstance(value, str):
            return value
    else:
        value = np.asarray(value)
        expected = {"int": "i", "float": "f", "bool": "b"}[kind]
        if value.ndim == 0 and value.dtype.kind in expected:
            return {"int": int, "float": float, "bool": bool}[kind](value)
    raise CorruptFileError(f"{path}: {item} is {_describe(value)}, expected one {kind}")


def _describe(value):
    """What a value read from the file is, in words: "a string", "a float64 array of shape (2,)"."""
    value = value if isinstance(value, (str, bytes)) else np.asarray(value)
    if isinstance(value, (str, bytes)) or value.dtype.kind in "SUO":
        return "a string" if np.ndim(value) == 0 else f"an array of strings of shape {value.shape}"
    return f"a {value.dtype} value" if value.ndim == 0 else \
        f"a {value.dtype} array of shape {value.shape}"


def _check_digest(f, path, name, computed, covers):
    stored = _root_attr(f, path, name, "str")
    if stored != computed:
        raise CorruptFileError(f"{path}: {name} does not match the file's contents: {covers}; "
                               f"the file is damaged")


def _names(group, path):
    """The member names of a group, in order."""
    with _reading(path, f"group {group.name}"):
        return list(group)


def _child(parent, name, path, kind=None):
    """parent[name], which must exist (and be a `kind`, when given). Opened directly, not by
    .get() or .items(), which return None for a link whose object cannot be opened."""
    where = f"{parent.name.rstrip('/')}/{name}"
    if name not in _names(parent, path):
        raise CorruptFileError(f"{path}: missing {_kind_name(kind or h5py.Dataset)} {where}")
    with _reading(path, where):
        item = parent[name]
    if kind is not None and not isinstance(item, kind):
        raise CorruptFileError(f"{path}: {where} is a {_kind_name(item)}, "
                               f"expected a {_kind_name(kind)}")
    return item


def _kind_name(item):
    cls = item if isinstance(item, type) else type(item)
    return "group" if issubclass(cls, h5py.Group) else \
        "dataset" if issubclass(cls, h5py.Dataset) else cls.__name__


def _read_arrays(group, path):
    """{name: array} of a group holding only numeric datasets."""
    arrays = {}
    for name in _names(group, path):
        dataset = _child(group, name, path, h5py.Dataset)
        arrays[name] = _read_array(dataset, path)
    return arrays


def _read_array(dataset, path):
    """A numeric dataset's values as a NumPy array (0-d datasets as 0-d arrays)."""
    with _reading(path, dataset.name):
        array = np.asarray(dataset[()])
    if array.dtype.kind not in "biuf":
        raise CorruptFileError(f"{path}: {dataset.name} is {_describe(array)}, expected a "
                               f"bool, integer or float array")
    return array


def _read_tree(item, path, version):
    """The inverse of _write_tree."""
    if isinstance(item, h5py.Group):
        return {name: _read_tree(_child(item, name, path), path, version)
                for name in _names(item, path)}
    with _reading(path, f"{item.name} (its 'kind' attribute)"):
        kind = item.attrs.get("kind")
    kind = kind.decode("utf-8", "replace") if isinstance(kind, bytes) else kind
    if kind not in LEAF_KINDS:
        raise CorruptFileError(f"{path}: {item.name} has kind {kind!r}, "
                               f"expected one of {LEAF_KINDS}")
    if kind == "array":
        return _read_array(item, path)
    with _reading(path, item.name):
        data = item[()]
    if kind == "none":
        if np.asarray(data).size != 0:
            raise CorruptFileError(f"{path}: {item.name} has kind 'none' but holds data")
        return None
    if kind == "int" and version == 1:  # version 1: a decimal string, any size
        text = _scalar(data, "str", path, item.name)
        try:
            return int(text)
        except ValueError:
            raise CorruptFileError(f"{path}: {item.name} is {text!r}, expected a decimal "
                                   f"integer") from None
    if kind == "str" and version >= 2:  # version 2: UTF-8 bytes in a uint8 array
        data = np.asarray(data)
        if data.ndim != 1 or data.dtype != np.uint8:
            raise CorruptFileError(f"{path}: {item.name} is {_describe(data)}, expected the "
                                   f"UTF-8 bytes of a string (uint8)")
        data = data.tobytes()
    return _scalar(data, kind, path, item.name)
