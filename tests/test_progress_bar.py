"""dvae_cupy.progress_bar: what the tqdm bar actually writes. Not a terminal (a StringIO, a
log file): plain lines, no carriage returns, one at the start, at most one per
LOG_INTERVAL_S, one at the end. A terminal: tqdm's in-place redraws. Disabled: nothing.
A fake clock (tqdm reads tqdm.std.time) makes the intervals exact."""
import io
import re

import pytest
import tqdm.std

from dvae_cupy.progress_bar import LOG_INTERVAL_S, LineStream, progress_bar


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(tqdm.std, "time", clock)
    return clock


def run_epoch(bar, clock, updates, steps, seconds_each, loss0=250.0):
    """The trainer's pattern: every `steps` steps, the running loss as postfix, then update."""
    with bar:
        for k in range(updates):
            clock.now += seconds_each
            bar.set_postfix(loss=f"{loss0 - k:.2f}", refresh=False)
            bar.update(steps)


def test_log_stream_gets_a_line_at_start_and_end_of_a_short_epoch(clock):
    stream = io.StringIO()
    run_epoch(progress_bar(500, "epoch 1/10", file=stream), clock, 20, 25, 0.5)
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines == ["epoch 1/10:   0%|          | 0/500 [00:00<?, ?step/s]",
                     "epoch 1/10: 100%|##########| 500/500 [00:10<00:00, 50.00step/s, "
                     "loss=231.00]"]


def test_log_stream_gets_a_line_per_interval_of_a_long_epoch(clock):
    stream = io.StringIO()
    # 20 updates 10 s apart: lines at 0 s, then 30, 60, ..., 180 s, then the close at 200 s
    run_epoch(progress_bar(500, "epoch 2/10", file=stream), clock, 20, 25, 10.0)
    lines = stream.getvalue().splitlines()
    assert LOG_INTERVAL_S == 30.0
    counts = [re.search(r"\| (\d+/500) \[", line).group(1) for line in lines]
    assert counts == ["0/500", "75/500", "150/500", "225/500", "300/500", "375/500",
                      "450/500", "500/500"]
    assert all(line == line.rstrip() for line in lines)   # tqdm's blank padding is gone
    assert lines[3] == ("epoch 2/10:  45%|####5     | 225/500 [01:30<01:50,  2.50step/s, "
                        "loss=242.00]")


def test_log_stream_resumed_epoch_starts_at_initial(clock):
    stream = io.StringIO()
    run_epoch(progress_bar(500, "epoch 3/10", initial=250, file=stream), clock, 10, 25, 0.1)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("epoch 3/10:  50%|#####     | 250/500")
    assert lines[-1].startswith("epoch 3/10: 100%|##########| 500/500") and len(lines) == 2


def test_real_log_file_is_plain_ascii_lines(tmp_path, clock):
    path = tmp_path / "train.log"
    with open(path, "w", encoding="utf-8") as log:
        run_epoch(progress_bar(100, "epoch 1/1", file=log), clock, 4, 25, 20.0)
    raw = path.read_bytes()
    assert b"\r" not in raw and raw.isascii()        # '#' bars even in a UTF-8 file
    assert len(raw.decode().splitlines()) == 4        # 0 s, 40 s, 80 s (>= 30 s apart), close


def test_terminal_gets_tqdm_redraws_in_place(clock):
    stream = FakeTTY()
    run_epoch(progress_bar(100, "epoch 1/1", file=stream), clock, 4, 25, 1.0)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")    # one line, redrawn
    assert text.count("\r") == 6                            # start, 4 updates, close
    assert "100/100" in text.rsplit("\r", 1)[1] and "loss=247.00" in text


@pytest.mark.parametrize("stream", [io.StringIO(), FakeTTY()])
def test_disabled_bar_writes_nothing(stream, clock):
    bar = progress_bar(100, "epoch 1/1", enabled=False, file=stream)
    run_epoch(bar, clock, 4, 25, 40.0)
    assert stream.getvalue() == ""    # (a disabled tqdm does not count either: bar.n stays 0)


def test_line_stream_passes_messages_through():
    stream = io.StringIO()
    lines = LineStream(stream)
    lines.write("\rstate one   ")
    lines.write("\rstate two")
    lines.write("\n")
    lines.write("a message")
    lines.write("\n")
    assert stream.getvalue() == "state one\nstate two\na message\n"


@pytest.mark.parametrize("total, initial, match", [
    (-1, 0, "total must be an integer >= 0"),
    (2.5, 0, "total must be an integer >= 0"),
    (True, 0, "total must be an integer >= 0"),
    (10, 11, r"initial must be an integer in \[0, total=10\]"),
    (10, -1, r"initial must be an integer in \[0, total=10\]"),
])
def test_bad_arguments(total, initial, match):
    with pytest.raises(ValueError, match=match):
        progress_bar(total, "x", initial=initial, file=io.StringIO())
