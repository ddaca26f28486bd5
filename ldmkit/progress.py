"""Progress bars: tqdm's (`tqdm.auto`), redrawn at most every ``NOT_A_TERMINAL_INTERVAL`` seconds when they
write to a file or a pipe rather than a terminal, so that a long run's log (``ldmkit train … 2> log``) gets a
line per half minute instead of ten a second. On a terminal, and in a notebook, they are tqdm's own."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm as _auto_tqdm

NOT_A_TERMINAL_INTERVAL = 30.0  # seconds between redraws into a file or pipe


class tqdm(_auto_tqdm):  # noqa: N801 (tqdm's own name, so that it stands in where tqdm was imported)
    """`tqdm.auto.tqdm`, with ``mininterval`` = `NOT_A_TERMINAL_INTERVAL` where its stream is not a terminal
    and none was given; there `set_postfix` (a loss shown at every step) waits for the next redraw too, instead
    of forcing one."""

    def __init__(self, *args, **kwargs):
        stream = kwargs.get("file") or sys.stderr
        on_terminal = getattr(stream, "isatty", lambda: False)()
        self._sparse = "mininterval" not in kwargs and not on_terminal and "notebook" not in _auto_tqdm.__module__
        if self._sparse:
            kwargs["mininterval"] = NOT_A_TERMINAL_INTERVAL
        super().__init__(*args, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh and not self._sparse, **kwargs)
