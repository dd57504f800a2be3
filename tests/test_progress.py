"""dvae_cupy.progress: the line's content, redraws on a terminal, one line per tenth elsewhere,
and silence when disabled. A fake clock makes times and rates exact."""
import io

import numpy as np
import pytest

from dvae_cupy.progress import Progress


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def make(total, stream, **kwargs):
    clock = FakeClock()
    return Progress(total, "train", stream=stream, clock=clock, **kwargs), clock


# ------------------------------------------------------------------------------------------------
# The line

def test_line_matches_the_documented_layout():
    bar, clock = make(1000, io.StringIO())
    clock.now += 12.0
    bar.update(450, loss=123.4)
    assert bar.line() == "train  45%|#####     | 450/1000 [00:12<00:15, 37.5 it/s] loss=123.4"


def test_line_before_any_progress_and_when_done():
    bar, clock = make(8, io.StringIO())
    assert bar.line() == "train   0%|          | 0/8 [00:00<?, ? it/s]"
    clock.now += 3725.0                                  # 1 h 2 min 5 s
    bar.update(8)
    assert bar.line().startswith("train 100%|##########| 8/8 [1:02:05<00:00, 0.0 it/s]")


def test_postfix_values_are_formatted_and_kept():
    bar, _ = make(10, io.StringIO())
    bar.update(1, loss=np.float32(101.23456), lr=1e-3, epoch=3)
    bar.update(1, loss=99.0)                             # replaces loss, keeps the others
    assert bar.line().endswith("] loss=99 lr=0.001 epoch=3")
    bar.update(0, note="x")                              # n=0: postfix only
    assert bar.n == 2 and bar.line().endswith("epoch=3 note=x")


def test_bad_total():
    for total in (-1, 2.5, None, True):
        with pytest.raises(ValueError, match="total must be an integer >= 0"):
            Progress(total, "x", stream=io.StringIO())


# ------------------------------------------------------------------------------------------------
# Not a terminal: plain lines, one per tenth

def test_plain_stream_prints_a_line_per_tenth():
    stream = io.StringIO()
    bar, clock = make(100, stream)
    for _ in range(100):
        clock.now += 0.01
        bar.update(1, loss=1.5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split("|")[2].split()[0] for line in lines] == \
        [f"{n}/100" for n in range(10, 101, 10)]         # close adds nothing: 100 is shown
    assert lines[-1] == "train 100%|##########| 100/100 [00:01<00:00, 100.0 it/s] loss=1.5"


def test_plain_stream_big_jumps_and_early_close():
    stream = io.StringIO()
    bar, _ = make(1000, stream)
    bar.update(5)                                        # under a tenth: nothing yet
    assert stream.getvalue() == ""
    bar.update(350)                                      # crosses three tenths: one line
    bar.update(10)                                       # still in the same tenth
    bar.close()                                          # the final, unfinished state
    bar.close()                                          # idempotent
    lines = stream.getvalue().splitlines()
    assert [line.split("| ")[1].split()[0] for line in lines] == ["355/1000", "365/1000"]


def test_context_manager_closes_on_exception():
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress(10, "x", stream=stream) as bar:
            bar.update(3)
            raise RuntimeError("boom")
    assert stream.getvalue().splitlines()[-1].startswith("x  30%|###       | 3/10")


def test_write_on_a_plain_stream():
    stream = io.StringIO()
    bar, _ = make(10, stream)
    bar.write("epoch 1: valid 99.5")
    assert stream.getvalue() == "epoch 1: valid 99.5\n"


# ------------------------------------------------------------------------------------------------
# A terminal: redraws in place, throttled

def test_tty_redraws_with_carriage_returns_at_most_every_interval():
    stream = FakeTTY()
    bar, clock = make(10, stream, every_seconds=0.5)
    assert stream.getvalue() == "\rtrain   0%|          | 0/10 [00:00<?, ? it/s]"
    clock.now += 0.1
    bar.update(1)                                        # too soon: no redraw
    assert stream.getvalue().count("\r") == 1
    clock.now += 0.5
    bar.update(1, loss=2.0)                              # redrawn
    assert stream.getvalue().count("\r") == 2
    assert stream.getvalue().endswith("\rtrain  20%|##        | 2/10 [00:01<00:02, 3.3 it/s] "
                                      "loss=2")
    for _ in range(8):
        bar.update(1)                                    # the last one draws: it is done
    assert stream.getvalue().count("\r") == 3
    assert "10/10" in stream.getvalue().rsplit("\r", 1)[1]
    bar.close()
    assert stream.getvalue().endswith("\n") and "\n" not in stream.getvalue()[:-1]


def test_tty_blanks_leftovers_of_a_longer_line():
    stream = FakeTTY()
    bar, clock = make(10, stream, every_seconds=0.0)
    bar.update(1, note="a long postfix value")
    long_width = len(stream.getvalue().rsplit("\r", 1)[1])
    bar.postfix.clear()
    bar.update(1)
    last = stream.getvalue().rsplit("\r", 1)[1]
    assert len(last) == long_width and last.endswith(" ") and "note" not in last


def test_tty_write_keeps_the_bar_below_the_message():
    stream = FakeTTY()
    bar, _ = make(10, stream)
    bar.update(2)
    bar.write("hello")
    bar_line = "train   0%|          | 0/10 [00:00<?, ? it/s]"
    assert stream.getvalue() == ("\r" + bar_line + "\r" + " " * len(bar_line) + "\rhello\n"
                                 "\rtrain  20%|##        | 2/10 [00:00<?, ? it/s]")


# ------------------------------------------------------------------------------------------------
# Disabled

@pytest.mark.parametrize("stream", [io.StringIO(), FakeTTY()])
def test_disabled_prints_nothing(stream):
    with Progress(5, "x", stream=stream, enabled=False) as bar:
        for _ in range(5):
            bar.update(1, loss=1.0)
        bar.write("message")
    assert stream.getvalue() == "" and bar.n == 5
