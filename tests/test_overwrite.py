"""dvae-train --overwrite and a diverging run never lose the work already in the folder: the
previous run is deleted only when the new one saves its first checkpoint, so bad input or a
divergence before that leaves it as it was, and the message says what the folder holds. Runs
dvae-train's main in this process on a small model (a few seconds each)."""
from pathlib import Path

import pytest

from dvae_cupy.cli import train_main, train_parser
from dvae_cupy.config import TrainConfig
from dvae_cupy.run_folder import LOCK_FILE
from dvae_cupy.train import Trainer

SMALL = ["--train-subset", "300", "--eval-subset", "100", "--hidden", "16", "--latent-vars", "2",
         "--categories", "3", "--batch-size", "50", "--backend", "cpu", "--no-progress",
         "--seed", "3", "--epochs", "1"]


def files(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.name != LOCK_FILE}


@pytest.fixture
def finished_run(tmp_path, capsys):
    folder = tmp_path / "run"
    assert train_main([*SMALL, "--out", str(folder)]) == 0
    capsys.readouterr()
    return folder


@pytest.mark.parametrize("bad", [["--dataset", "/nonexistent/images.npy"], ["--batch-size", "5000"],
                                 ["--backend", "gpu"]])
def test_overwrite_with_bad_input_leaves_the_previous_run_as_it_was(finished_run, capsys, bad):
    before = files(finished_run)
    assert set(before) >= {"checkpoint.h5", "best.h5", "metrics.jsonl"}
    assert train_main([*SMALL, "--overwrite", "--out", str(finished_run), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dvae-train: error: ") and err.count("\n") == 1
    assert files(finished_run) == before


def test_overwrite_replaces_the_run_when_it_saves_its_first_checkpoint(finished_run, capsys):
    before = files(finished_run)
    assert train_main([*SMALL, "--seed", "4", "--overwrite", "--out", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert f"--overwrite: the previous run in {finished_run} (epoch 1," in out
    assert f"--overwrite: removed the previous run in {finished_run}: deleted checkpoint.h5" in out
    assert out.index("is deleted when this run saves") < out.index("removed the previous run")
    after = files(finished_run)
    assert len(after["metrics.jsonl"].splitlines()) == 1      # the new run's epoch only
    assert after["checkpoint.h5"] != before["checkpoint.h5"]


def test_divergence_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, capsys):
    folder = tmp_path / "diverged"
    assert train_main([*SMALL, "--lr", "1000", "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "training stopped; nothing was saved: it came before the first checkpoint" in err
    assert files(folder) == {}


def test_divergence_of_an_overwrite_run_keeps_the_previous_run(finished_run, capsys):
    before = files(finished_run)
    assert train_main([*SMALL, "--lr", "1000", "--overwrite", "--out", str(finished_run)]) == 1
    err = capsys.readouterr().err
    assert (f"training stopped; nothing was saved, and the previous run in {finished_run} is as "
            f"it was") in err
    assert files(finished_run) == before


def test_divergence_after_a_checkpoint_names_the_files_that_hold_it(finished_run):
    args = vars(train_parser().parse_args([*SMALL, "--epochs", "2", "--out", str(finished_run)]))
    trainer = Trainer(TrainConfig.from_dict(args), log=lambda line: None, resume=True)
    try:
        assert trainer.kept_files() == (f"; {finished_run / 'checkpoint.h5'} and "
                                        f"{finished_run / 'best.h5'} hold the last states saved "
                                        f"before it")
    finally:
        trainer.close()
