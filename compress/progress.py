"""Progress of a training stage, for a person: a bar on a terminal, plain lines in a log.

On a terminal the stage shows a tqdm bar redrawn in place. When stderr is not a terminal (a log
file, a pipe, a CI job), a bar would write every redraw and its carriage return into the log;
there the stage writes one plain line at most every :data:`LOG_INTERVAL` seconds instead, plus
its last epoch:

    fit: epoch 120/300 (40 %), 1:02 elapsed, about 1:33 left, loss 0.0123, PSNR 25.10 dB

Nothing at all is written when progress is off (``-q``).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two lines of one stage in a log


def clock(seconds: float) -> str:
    """'m:ss', or 'h:mm:ss' from an hour."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class StageProgress:
    """The epochs of one stage: ``update`` after each, ``write`` for a message, ``close`` at the end."""

    def __init__(self, desc: str, total: int, initial: int = 0, enabled: bool = True, stream=None,
                 interval: float = LOG_INTERVAL):
        self.desc, self.total, self.done, self.enabled = desc, total, initial, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.perf_counter()
        self.last_line = None  # perf_counter of the last line written (None: none yet)
        self.pending = ""  # the latest line not written yet
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="ep", leave=False, dynamic_ncols=True,
                            mininterval=0.5, file=self.stream)

    def update(self, done: int, total: int, loss: float, psnr: float) -> None:
        """``done`` of ``total`` epochs finished (the total may change), with the last epoch's loss and PSNR."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{psnr:.2f}", refresh=False)
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            return
        self.done, self.total = done, total
        elapsed = time.perf_counter() - self.started
        line = f"{self.desc}: epoch {done}/{total} ({100 * done / max(total, 1):.0f} %), {clock(elapsed)} elapsed"
        if 0 < done < total:
            line += f", about {clock(elapsed / done * (total - done))} left"
        self.pending = line + f", loss {loss:.4g}, PSNR {psnr:.2f} dB"
        now = time.perf_counter()
        if self.last_line is None or now - self.last_line >= self.interval:
            self._emit(now)

    def _emit(self, now: float) -> None:
        print(self.pending, file=self.stream, flush=True)
        self.pending, self.last_line = "", now

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Ends the stage; in a log, its last epoch's line if it was not written yet."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.pending:
            self._emit(time.perf_counter())
