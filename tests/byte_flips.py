"""Byte-flip sweeps of checkpoint files: damage one byte at a time and sort what loading does.

Each case flips one byte (XOR 0xFF) of a good file and loads the copy. The outcome is one of
  refused     CorruptFileError whose message starts with the damaged file's path
  unaffected  it loads, and every array and field equals the original exactly
  changed     it loads with different contents            (must never happen)
  unnamed     CorruptFileError not naming the file         (must never happen)
  other:<T>   any other exception T                        (must never happen)
  hang        no answer within the time limit              (must never happen)

The sweep runs in a child process (python tests/byte_flips.py FILE STATE [SABOTAGE], the
offsets as a JSON list on stdin), which prints one JSON line per case, so
that a case on which HDF5 loops forever is reported as a hang at its offset instead of
stalling the test run.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py

HERE = Path(__file__).parent
GOOD = ("refused", "unaffected")


def data_regions(path):
    """[(start, stop, dataset name)] of the raw data of every dataset in the file (each chunk
    of a chunked one, Fletcher-32 checksum included)."""
    regions = []
    with h5py.File(path, "r") as f:
        def visit(name, item):
            if not isinstance(item, h5py.Dataset):
                return
            dsid = item.id
            if item.chunks is None:
                offset = dsid.get_offset()
                if offset is not None and dsid.get_storage_size():
                    regions.append((offset, offset + dsid.get_storage_size(), name))
            else:
                for i in range(dsid.get_num_chunks()):
                    info = dsid.get_chunk_info(i)
                    regions.append((info.byte_offset, info.byte_offset + info.size, name))
        f.visititems(visit)
    return sorted(regions)


def region_of(offset, regions):
    """The dataset whose raw data holds `offset`, or "metadata"."""
    for start, stop, name in regions:
        if start <= offset < stop:
            return f"data:{name}"
    return "metadata"


def spread_offsets(size, regions, evenly=40):
    """Offsets spread over the file: `evenly` over all of it, `evenly` over its metadata (the
    bytes outside every dataset's raw data), and the first, middle and last byte of each
    dataset's raw data."""
    offsets = {i * size // evenly for i in range(evenly)}
    in_data = set()
    for start, stop, _ in regions:
        in_data.update(range(start, stop))
        offsets |= {start, (start + stop) // 2, stop - 1}
    metadata = [offset for offset in range(size) if offset not in in_data]
    offsets |= {metadata[i * len(metadata) // evenly] for i in range(evenly)}
    return sorted(offsets)


def sweep(path, state_name, offsets, timeout=300, sabotage=None):
    """Run the cases in a child process; return [(offset, region, outcome, detail)]. A case
    still running at `timeout` is reported as a hang and ends the sweep."""
    path = os.fspath(path)
    regions = data_regions(path)
    command = [sys.executable, os.fspath(HERE / "byte_flips.py"), path, state_name,
               sabotage or ""]
    try:
        run = subprocess.run(command, input=json.dumps(offsets), capture_output=True, text=True,
                             timeout=timeout)
        lines, ended = run.stdout.splitlines(), run.returncode
    except subprocess.TimeoutExpired as late:
        out = late.stdout.decode() if isinstance(late.stdout, bytes) else (late.stdout or "")
        lines, ended = out.splitlines(), "timeout"
    results = [json.loads(line) for line in lines if line.startswith("{")]
    done = {r["offset"] for r in results}
    cases = [(r["offset"], region_of(r["offset"], regions), r["outcome"], r["detail"])
             for r in results]
    if ended == "timeout":
        hung = next(o for o in offsets if o not in done)
        cases.append((hung, region_of(hung, regions), "hang", f"no answer in {timeout} s"))
    elif ended != 0:
        raise RuntimeError(f"the sweep's child process failed ({ended}): {run.stderr[-2000:]}")
    return cases


# ------------------------------------------------------------------------------------------------
# The child process

def _outcome(damaged, state):
    """(outcome, detail) of loading the damaged copy `damaged` of a checkpoint of `state`."""
    from checkpoint_samples import checkpoint_differences

    from dvae_cupy import checkpoint
    from dvae_cupy.errors import CorruptFileError
    try:
        ckpt = checkpoint.load_checkpoint(damaged)
    except CorruptFileError as err:
        named = str(err).startswith(f"{damaged}: ")
        return ("refused" if named else "unnamed"), str(err).removeprefix(f"{damaged}: ")
    except Exception as err:  # noqa: BLE001 - the sweep exists to catch exactly these
        return f"other:{type(err).__name__}", str(err)
    difference = checkpoint_differences(ckpt, state)
    return ("unaffected", "") if difference is None else ("changed", difference)


def _sabotage(name):
    """Break the loader on purpose, to show that the sweep notices."""
    from dvae_cupy import checkpoint
    if name == "skip-digests":
        checkpoint._check_digest = lambda *args: None
    elif name == "hang":  # what HDF5 did on a damaged global heap: never return
        checkpoint.load_checkpoint = lambda path: __import__("time").sleep(3600)


def _main(path, state_name, offsets, sabotage):
    import checkpoint_samples
    state = getattr(checkpoint_samples, state_name)()
    _sabotage(sabotage)
    original = Path(path).read_bytes()
    damaged = Path(path).with_name("damaged.h5")
    for offset in offsets:
        data = bytearray(original)
        data[offset] ^= 0xFF
        damaged.write_bytes(data)
        outcome, detail = _outcome(os.fspath(damaged), state)
        print(json.dumps({"offset": offset, "outcome": outcome, "detail": detail[:300]}),
              flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(HERE))
    _main(sys.argv[1], sys.argv[2], json.load(sys.stdin), sys.argv[3])
