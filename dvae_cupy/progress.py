"""A dependency-free progress bar for long loops (epochs, evaluation passes).

    with Progress(len(batches), "epoch 3") as bar:
        for batch in batches:
            loss = step(batch)
            bar.update(loss=loss)

On a terminal it redraws one line in place (carriage return), at most every `every_seconds`:
    epoch 3  45%|#####     | 450/1000 [00:12<00:15, 37.5 it/s] loss=123.4
Elsewhere (CI logs, pipes, files) redrawing would leave a line per redraw, so it prints a plain
line each time another tenth of the total is done, and the final state on close.
"""
import math
import sys
import time

import numpy as np

BAR_WIDTH = 10
LOG_FRACTIONS = 10          # not a terminal: one line per tenth of the total


class Progress:
    """Progress of `total` iterations; see the module docstring.

    stream: where to draw (None: sys.stderr at construction). enabled=False draws nothing.
    clock: seconds as a float (time.monotonic; tests pass a fake one).
    """

    def __init__(self, total, desc="", stream=None, every_seconds=0.5, enabled=True,
                 clock=time.monotonic):
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"total must be an integer >= 0; got {total!r}")
        self.total, self.desc, self.n = total, desc, 0
        self.stream = sys.stderr if stream is None else stream
        self.every_seconds, self.enabled, self.clock = every_seconds, enabled, clock
        self.postfix = {}
        self.tty = enabled and _isatty(self.stream)
        self.start = self.last_draw = clock()
        self.drawn_width = 0        # TTY: length of the line on screen, to blank leftovers
        self.logged_n = 0           # not a TTY: n at the last printed line
        self.closed = False
        if self.tty:
            self._redraw(self.start)    # show the bar at once, not after the first interval

    def update(self, n=1, **postfix):
        """Advance by `n` (0 just updates the postfix); keyword values show after the bar."""
        self.n += n
        self.postfix.update(postfix)
        if not self.enabled or self.closed:
            return
        now = self.clock()
        if self.tty:
            if now - self.last_draw >= self.every_seconds or self.n >= self.total:
                self._redraw(now)
        elif self._tenth(self.n) > self._tenth(self.logged_n):
            self._log(now)

    def write(self, message):
        """Print a line of text without breaking the bar (it is redrawn below the text)."""
        if not self.enabled:
            return
        if self.tty and self.drawn_width:
            self.stream.write("\r" + " " * self.drawn_width + "\r")
            self.drawn_width = 0
        self.stream.write(message + "\n")
        if self.tty and not self.closed:
            self._redraw(self.clock())

    def close(self):
        """Draw the final state and end the line; calling it again does nothing."""
        if self.closed:
            return
        self.closed = True
        if not self.enabled:
            return
        now = self.clock()
        if self.tty:
            self._redraw(now)
            self.stream.write("\n")
        elif self.n != self.logged_n or self.n == 0:
            self._log(now)
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()        # also on an exception, so a traceback starts on a fresh line

    # --------------------------------------------------------------------------------------------

    def line(self, now=None):
        """The status line for the current state, e.g.
        `desc  45%|#####     | 450/1000 [00:12<00:15, 37.5 it/s] loss=123.4`."""
        elapsed = (self.clock() if now is None else now) - self.start
        rate = self.n / elapsed if elapsed > 0 and self.n > 0 else None
        fraction = min(self.n / self.total, 1.0) if self.total else 1.0
        filled = math.floor(fraction * BAR_WIDTH + 0.5)
        remaining = (_clock_text(max(self.total - self.n, 0) / rate) if rate else "?")
        speed = f"{rate:.1f} it/s" if rate else "? it/s"
        text = (f"{self.desc} {100 * fraction:3.0f}%|{'#' * filled:<{BAR_WIDTH}}| "
                f"{self.n}/{self.total} [{_clock_text(elapsed)}<{remaining}, {speed}]")
        if self.postfix:
            text += " " + " ".join(f"{k}={_value_text(v)}" for k, v in self.postfix.items())
        return text

    def _redraw(self, now):
        """TTY: overwrite the current line, blanking what a longer previous line left."""
        text = self.line(now)
        self.stream.write("\r" + text + " " * max(self.drawn_width - len(text), 0))
        self.stream.flush()
        self.drawn_width = len(text)
        self.last_draw = now

    def _log(self, now):
        """Not a TTY: one plain line."""
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()
        self.logged_n = self.n

    def _tenth(self, n):
        """How many whole tenths of the total `n` iterations make."""
        return n * LOG_FRACTIONS // self.total if self.total else LOG_FRACTIONS


def _isatty(stream):
    """True when `stream` is a terminal; streams without isatty() are not."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _clock_text(seconds):
    """mm:ss, or h:mm:ss from an hour on."""
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _value_text(value):
    """Floats to 5 significant digits (loss=123.4, lr=0.001); anything else as str()."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.5g}"
    return str(value)
