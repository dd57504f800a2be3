"""dvae-train's options come from TrainConfig: --help shows every field with its default, the
parser's defaults are the config's, and README.md's options table is the one the code makes."""
from dataclasses import fields
from pathlib import Path

from dvae_cupy.cli import option_flags, options_table, train_parser
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


def test_flags_set_the_fields_they_name():
    args = vars(train_parser().parse_args(["-N", "3", "-K", "4", "-M", "2", "--two-sided",
                                           "--no-progress", "--eps-min", "0.2"]))
    assert (args["n_latent"], args["n_categories"], args["gumbel_samples"]) == (3, 4, 2)
    assert args["two_sided"] is True and args["progress"] is False and args["eps_min"] == 0.2


def test_readme_options_table_is_the_codes():
    assert options_table() in README.read_text(), (
        "README.md's options table is out of date: paste dvae_cupy.cli.options_table() into it")
