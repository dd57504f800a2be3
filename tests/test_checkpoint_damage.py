"""Byte-flip sweeps of real checkpoints (see byte_flips.py): every damaged byte, in metadata or
in data, is either refused with a CorruptFileError naming the file or provably harmless (the
load equals the original exactly); nothing else, and no hang. Run with -s to see the counts."""
import collections
import os

import pytest
from byte_flips import GOOD, data_regions, region_of, spread_offsets, sweep
from checkpoint_samples import sample_state, trainer_state

from dvae_cupy.checkpoint import save_checkpoint

STATES = {"trainer_state": trainer_state, "sample_state": sample_state}


def write(tmp_path, state_name):
    path = tmp_path / "checkpoint.h5"
    save_checkpoint(path, **STATES[state_name]())
    return path


def tally(cases):
    """{(metadata|data, outcome): count}, printed for the record."""
    counts = collections.Counter((region.split(":")[0], outcome)
                                 for _, region, outcome, _ in cases)
    print(f"\n{len(cases)} byte flips: " + ", ".join(
        f"{region} {outcome} {n}" for (region, outcome), n in sorted(counts.items())))
    return counts


def assert_all_good(cases):
    bad = [case for case in cases if case[2] not in GOOD]
    assert not bad, f"{len(bad)} bad cases, e.g. {bad[:5]}"


@pytest.mark.parametrize("state_name", ["trainer_state", "sample_state"])
def test_spread_byte_flips_are_refused_or_harmless(tmp_path, state_name):
    path = write(tmp_path, state_name)
    regions = data_regions(path)
    offsets = spread_offsets(path.stat().st_size, regions)
    cases = sweep(path, state_name, offsets)
    counts = tally(cases)
    assert len(cases) == len(offsets) >= 30
    assert sum(n for (region, _), n in counts.items() if region == "metadata") >= 20
    assert sum(n for (region, _), n in counts.items() if region == "data") >= 30
    assert_all_good(cases)


@pytest.mark.slow
def test_every_seventh_byte_flip_is_refused_or_harmless(tmp_path):
    """One byte in seven, one at a time (about 2,600 loads, every structure of the file hit:
    the every-byte run, 18,336 flips, all refused or harmless, took 400 s on this machine, too
    long for CI; DVAE_CUPY_EVERY_BYTE=1 runs it)."""
    path = write(tmp_path, "trainer_state")
    stride = 1 if os.environ.get("DVAE_CUPY_EVERY_BYTE") == "1" else 7
    cases = sweep(path, "trainer_state", list(range(0, path.stat().st_size, stride)), timeout=1800)
    tally(cases)
    assert_all_good(cases)


def test_the_sweep_catches_a_loader_that_skips_its_digests(tmp_path):
    """Broken on purpose: with the digest checks turned off, flips in the values of 0-d datasets
    (which HDF5 cannot checksum) load as changed contents; the real loader refuses them all."""
    path = write(tmp_path, "trainer_state")
    regions = data_regions(path)
    scalar_bytes = [offset for start, stop, name in regions
                    if name.startswith(("rng_state/", "extra/")) for offset in range(start, stop)
                    if stop - start <= 8]        # the int64/float64/bool leaves
    assert len(scalar_bytes) >= 40
    sabotaged = sweep(path, "trainer_state", scalar_bytes, sabotage="skip-digests")
    outcomes = collections.Counter(outcome for _, _, outcome, _ in sabotaged)
    assert outcomes["changed"] == len(scalar_bytes), outcomes
    honest = sweep(path, "trainer_state", scalar_bytes)
    assert {outcome for _, _, outcome, _ in honest} == {"refused"}
    assert all("fields_digest does not match" in detail for *_, detail in honest)


def test_region_map_finds_every_dataset(tmp_path):
    """The sweep's idea of "data" is right: every dataset's bytes are in the map, and the
    superblock is metadata."""
    path = write(tmp_path, "trainer_state")
    regions = data_regions(path)
    names = {name for _, _, name in regions}
    assert {f"params/{k}" for k in trainer_state()["params"]} <= names
    assert "extra/epoch_loss_sum" in names and "rng_state/scheme" in names
    assert region_of(0, regions) == "metadata"


def test_a_hanging_case_is_reported_at_its_offset(tmp_path):
    path = write(tmp_path, "trainer_state")
    cases = sweep(path, "trainer_state", [5, 6], timeout=5, sabotage="hang")
    assert cases == [(5, "metadata", "hang", "no answer in 5 s")]
