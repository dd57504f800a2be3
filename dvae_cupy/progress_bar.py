"""The trainer's progress bar: tqdm, set up to read well on a terminal and in a log file.

    bar = progress_bar(steps_per_epoch, f"epoch {epoch}/{epochs}", enabled=config.progress,
                       initial=first_step)
    with bar:
        ...
        bar.set_postfix(loss=f"{loss:.2f}", refresh=False)   # shown from the next redraw
        bar.update(steps_done_since_last_update)

On a terminal tqdm redraws one line in place, at most every 0.1 s, resizing with the window.
Elsewhere (a log file, a pipe, CI) tqdm would still redraw with carriage returns, so a file
would get every state of the bar piled into one physical line. There the bar instead writes a
plain line when it starts, then at most one every LOG_INTERVAL_S seconds, then its final state
when closed: two lines for an epoch shorter than that, a heartbeat for longer ones.
"""
import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0    # not a terminal: at most one line per this many seconds


def progress_bar(total, desc, enabled=True, initial=0, file=None):
    """A tqdm bar over `total` steps, labelled `desc`, starting at `initial` (a resumed epoch).

    file: where to draw (None: sys.stderr). enabled=False gives a bar that draws nothing (its
    update/set_postfix/close still work). Use it as a context manager, or call close().
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"total must be an integer >= 0; got {total!r}")
    if isinstance(initial, bool) or not isinstance(initial, int) or not 0 <= initial <= total:
        raise ValueError(f"initial must be an integer in [0, total={total}]; got {initial!r}")
    stream = sys.stderr if file is None else file
    options = dict(total=total, desc=desc, initial=initial, unit="step", leave=True,
                   disable=not enabled)
    if _isatty(stream):
        return tqdm(file=stream, dynamic_ncols=True, **options)
    # miniters=1 turns off tqdm's adaptive miniters, and with it the monitor thread's forced
    # redraws (it only acts on bars with miniters > 1), so the interval alone decides.
    return tqdm(file=LineStream(stream), mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S,
                miniters=1, ascii=True, **options)


class LineStream:
    """A file-like wrapper that turns tqdm's in-place redraws ('\\r' + state + blank padding)
    into one plain line per state; the closing '\\n' adds nothing, the state already ended its
    line. Text with no carriage return (tqdm.write messages) passes through line by line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        for piece in text.replace("\r", "\n").split("\n"):
            piece = piece.rstrip(" ")
            if piece:
                self.stream.write(piece + "\n")
        self.flush()

    def flush(self):
        getattr(self.stream, "flush", lambda: None)()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", None)


def _isatty(stream):
    """True when `stream` is a terminal; streams without a working isatty() are not."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
