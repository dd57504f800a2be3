"""dvae-train's options come from TrainConfig: --help shows every field with its default, the
parser's defaults are the config's, and README.md's options table is the one the code makes."""
from dataclasses import fields
from pathlib import Path

from dvae_cupy.cli import in_flags, option_flags, options_table, train_main, train_parser
from dvae_cupy.config import TrainConfig

README = Path(__file__).resolve().parent.parent / "README.md"


def test_parser_defaults_are_the_config_defaults():
    args = vars(train_parser().parse_args([]))
    args.pop("resume")
    assert TrainConfig.from_dict(args) == TrainConfig()


def test_help_lists_every_option_with_its_default():
    text = train_parser().format_help()
    for field in fields(TrainConfig):
        assert option_flags(field)[0] in text, field.name
    assert "(default: 300)" in text and "(default: runs/dvae)" in text
    # no default where it would mislead: a flag's (True for --no-progress reads as "off") or None
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "(default: None)" not in text
    assert "--debug" in text


def test_flags_set_the_fields_they_name():
    args = vars(train_parser().parse_args(["-N", "3", "-K", "4", "-M", "2", "--two-sided",
                                           "--no-progress", "--eps-min", "0.2"]))
    assert (args["n_latent"], args["n_categories"], args["gumbel_samples"]) == (3, 4, 2)
    assert args["two_sided"] is True and args["progress"] is False and args["eps_min"] == 0.2


def test_readme_options_table_is_the_codes():
    assert options_table() in README.read_text(), (
        "README.md's options table is out of date: paste dvae_cupy.cli.options_table() into it")


def test_config_errors_name_the_flags_a_shell_user_typed():
    assert in_flags("batch_size must be an integer >= 1, got 0") == "--batch-size must be an integer >= 1, got 0"
    assert in_flags("eps_min (2.0) must be <= eps0 (1.0): the schedule anneals from eps0 down to "
                    "eps_min") == ("--eps-min (2.0) must be <= --eps0 (1.0): the schedule anneals "
                                   "from --eps0 down to --eps-min")
    assert in_flags("the pairwise model's latent variables are binary: n_categories (--categories, "
                    "-K) is 2, got 3") == ("the pairwise model's latent variables are binary: "
                                           "--categories is 2, got 3")
    # a field name that is also a word is translated only where it starts the message
    assert in_flags("the pairwise model is trained by the direct estimator, not 'exact'") == (
        "the pairwise model is trained by the direct estimator, not 'exact'")
    assert in_flags("out must name a folder, got ''").startswith("--out must name a folder")


def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_main(["--out", "", "--epochs", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("dvae-train: error: --out must name a folder, got ''")
    assert list(tmp_path.iterdir()) == []


def test_options_that_do_nothing_in_this_run_are_named():
    assert TrainConfig().ignored_options() == []
    assert TrainConfig(estimator="exact", gumbel_samples=1, eps0=1.0).ignored_options() == []
    ignored = TrainConfig(estimator="gumbel-softmax", eps0=2.0, two_sided=True, tau0=2.0,
                          pairwise="signed").ignored_options()
    assert [name for name, _ in ignored] == ["two_sided", "eps0", "pairwise"]
    assert dict(ignored)["eps0"] == "it applies to the direct estimator, not gumbel-softmax"
    assert [n for n, _ in TrainConfig(straight_through=True, nll_samples=7).ignored_options()] == [
        "straight_through", "nll_samples"]
    assert TrainConfig(n_latent=3, nll_samples=7).ignored_options() == []


def test_dvae_train_notes_each_option_that_does_nothing(tmp_path, capsys):
    assert train_main(["--straight-through", "--epochs", "0", "--backend", "cpu", "--out",
                       str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert ("dvae-train: note: --straight-through has no effect here: it applies to the "
            "gumbel-softmax estimator, not direct\n") in err


def test_a_resumed_run_with_nothing_to_do_does_no_final_evaluation(tmp_path, capsys):
    run = ["--train-subset", "200", "--eval-subset", "100", "--hidden", "8", "-N", "2", "-K", "3",
           "--batch-size", "50", "--backend", "cpu", "--no-progress", "--epochs", "1",
           "--nll-samples", "2", "--out", str(tmp_path)]
    assert train_main(run) == 0
    assert "test NLL bound" in capsys.readouterr().out
    assert train_main([*run, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "test NLL bound" not in out


def test_out_may_be_a_path_and_resume_of_an_empty_out_reads_nothing(tmp_path, monkeypatch, capsys):
    assert TrainConfig(out=tmp_path / "run").out == str(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoint.h5").write_bytes(b"not read")
    assert train_main(["--resume", "--out", ""]) == 2
    captured = capsys.readouterr()
    assert "the run's own" not in captured.out
    assert captured.err.startswith("dvae-train: error: --out must name a folder")
