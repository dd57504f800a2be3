"""Command-line entry points: dvae-train (train a discrete VAE) and dvae-check (kernels vs reference).

dvae-train's options are built from TrainConfig's fields (config.py), so the command line, the
config, the checkpoint's config and README's options table cannot drift apart.
"""
import argparse
import re
import signal
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from .checkpoint import load_checkpoint
from .config import TrainConfig, resumable_fields
from .errors import RunInterrupted
from .train import Trainer

GROUPS = ("data", "model", "estimator", "optimisation", "run")
DEBUG_HELP = "show the traceback of an error instead of its one line"


def option_flags(field):
    """The option strings of a config field: its "flags" metadata, else --field-name."""
    return field.metadata.get("flags") or ("--" + field.name.replace("_", "-"),)


def _value_type(field):
    """int, float or str: the type argparse converts an option's text to."""
    optional = [a for a in typing.get_args(field.type) if a is not type(None)]
    return optional[0] if optional else field.type


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where it would mislead: a flag's (on/off is
    in its name: "--no-progress ... (default: True)" read as progress off) and None (no default
    value; the help says what happens)."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def train_parser(defaults=True):
    """dvae-train's parser; defaults=False leaves out what the command line does not set
    (given_options)."""
    p = argparse.ArgumentParser(
        prog="dvae-train", formatter_class=_DefaultsHelp,
        description="Train a discrete VAE with direct optimization through arg max "
                    "(Lorberbom et al., NeurIPS 2019). Defaults are the paper's.")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for field in fields(TrainConfig):
        meta = field.metadata
        if "help" not in meta:
            continue
        group, flags = groups[meta["group"]], option_flags(field)
        default = field.default if field.default is not MISSING else None
        parsed_default = default if defaults else argparse.SUPPRESS
        if field.type is bool:
            action = "store_false" if default else "store_true"
            group.add_argument(*flags, dest=field.name, action=action, default=parsed_default,
                               help=meta["help"])
        else:
            group.add_argument(*flags, dest=field.name, type=_value_type(field),
                               default=parsed_default, choices=meta.get("choices"), help=meta["help"])
        if field.name == "out":
            group.add_argument("--resume", action="store_true",
                               help="continue the run saved in --out")
            group.add_argument("--overwrite", action="store_true",
                               help="replace the run saved in --out (its files are deleted once this "
                                     "run has saved its first epoch)")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


def options_table():
    """The Markdown table of dvae-train's options that README.md shows (a test keeps it equal)."""
    rows = ["| option | default | what |", "| --- | --- | --- |"]
    for field in fields(TrainConfig):
        if "help" not in field.metadata:
            continue
        flags = ", ".join(f"`{flag}`" for flag in option_flags(field))
        default = "" if field.type is bool else f"`{field.default}`"
        rows.append(f"| {flags} | {default} | {field.metadata['help']} |")
        if field.name == "out":
            rows.append("| `--resume` | | continue the run saved in --out |")
            rows.append("| `--overwrite` | | replace the run saved in --out (its files are deleted "
                        "once this run has saved its first epoch) |")
    rows.append(f"| `--debug` | | {DEBUG_HELP} |")
    return "\n".join(rows)


# Faults a user can cause or meet, reported in one line: bad input (options, data, checkpoints,
# run folders, a GPU that cannot be used) and failures of the run itself (a full disk, a loss
# that diverged). Anything else is a bug and keeps its traceback.
USER_FAULTS = (ValueError, OSError, RuntimeError, FloatingPointError)
BAD_INPUT, RUN_FAILED = 2, 1


def train_main(argv=None):
    args = vars(train_parser().parse_args(argv))
    resume, overwrite, debug = args.pop("resume"), args.pop("overwrite"), args.pop("debug")
    stage = BAD_INPUT  # until the first step starts: then a fault is a failure of the run
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # the loop takes it over, then gives it back
    try:
        try:  # the config and the trainer name the fields; a shell user typed flags
            if resume and args["out"].strip():
                args = with_the_runs_options(args, given_options(argv))
            config = TrainConfig.from_dict(args)
            for name, reason in config.ignored_options():
                print(f"dvae-train: note: {in_flags(name)} has no effect here: {reason}",
                      file=sys.stderr, flush=True)
            trainer = Trainer(config, resume=resume, overwrite=overwrite)
        except ValueError as error:
            if type(error) is not ValueError:  # its own kind (a damaged file, a busy folder)
                raise
            raise ValueError(in_flags(str(error))) from error
        print(f"training on {trainer.backend.name}: N={config.n_latent} K={config.n_categories} "
              f"estimator={config.estimator}, {len(trainer.train_images)} images, "
              f"{trainer.steps_per_epoch} steps per epoch, output in {config.out}", flush=True)
        stage = RUN_FAILED
        epochs_before = trainer.epoch
        trainer.run()
        trained = trainer.epoch > epochs_before  # not a resumed run that had nothing to do
        if config.n_latent > 1 and config.latent_structure == "categorical" and trained:
            nll = trainer.evaluate_nll()
            print(f"test NLL bound ({config.nll_samples} importance samples): {nll:.2f}")
    except RunInterrupted as interruption:
        if "outside the training loop" in str(interruption):
            print(f"dvae-train: {interruption}", file=sys.stderr)
        return 128 + interruption.signum
    except KeyboardInterrupt:  # before the loop took over SIGINT
        return 128 + signal.SIGINT
    except USER_FAULTS as error:
        if debug:
            raise
        print(f"dvae-train: error: {_message(error)}", file=sys.stderr)
        return stage
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def given_options(argv):
    """The config fields the command line `argv` sets itself (not left at their defaults)."""
    return set(vars(train_parser(defaults=False).parse_args(argv))) & {f.name for f in fields(TrainConfig)}


def with_the_runs_options(args, given):
    """--resume: the options that define the run (all but the resumable ones: resumable_fields)
    and --epochs, where the command line leaves them out, are the resumed run's own, from its
    checkpoint.h5's config: `dvae-train --resume --out F` continues the run in F as it was
    started, to its first --epochs unless given. The resumable ones (--backend, --no-progress,
    ...) are about this process and keep their defaults. Where checkpoint.h5 cannot be read,
    `args` as they are: the trainer then says what is wrong with it."""
    try:
        saved = load_checkpoint(Path(args["out"]) / "checkpoint.h5").config
    except (OSError, ValueError):
        return args
    kept = (set(args) - resumable_fields()) | {"epochs"}
    taken = {name: value for name, value in saved.items()
             if name in kept and name not in given and value != args[name]}
    if taken:
        print("--resume: the run's own " + ", ".join(
            in_flags(n) if isinstance(v, bool) else f"{in_flags(n)} {v}" for n, v in taken.items()),
            flush=True)
    return {**args, **taken}


def in_flags(message):
    """A config error's message with the fields it names spelt as dvae-train's flags: a field
    name that starts the message, and anywhere a name no English word shares (one with an
    underscore or a digit: batch_size, eps0). "batch_size must be ..." -> "--batch-size must be"."""
    for field in fields(TrainConfig):
        if "help" not in field.metadata:
            continue
        flag = option_flags(field)[0]
        message = message.replace(f"{field.name} ({', '.join(option_flags(field))})", field.name)
        if re.match(rf"{field.name}\b", message):
            message = flag + message[len(field.name):]
        if re.search(r"[_0-9]", field.name):
            message = re.sub(rf"(?<![^\s(]){field.name}\b", flag, message)  # a word of its own
    return message


def _message(error):
    """An error's message without Python's "[Errno 28]" prefix when it says it in words."""
    if isinstance(error, OSError) and error.strerror and not error.filename:
        return error.strerror
    return str(error)


def _stop_on_sigterm(signum, frame):
    """SIGTERM outside the training loop (loading, the final evaluation): nothing is mid-write
    there, so stop at once; the last checkpoint is on disk."""
    raise RunInterrupted(signum, "SIGTERM: stopped outside the training loop; the last "
                                 "checkpoint is kept")


def check_main(argv=None):
    from .check import check_main as run_checks

    return run_checks(argv)


if __name__ == "__main__":
    sys.exit(train_main())
