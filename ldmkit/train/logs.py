"""What a run records as it goes: ``OUT/log.csv`` and TensorBoard event files in ``OUT/tensorboard/``.

Both are written by rank 0 only. When a run resumes from step S, rows and events past S (written
after the checkpoint the run resumed from, then lost with the crash) are dropped, so the logs read
as one uninterrupted run.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from ldmkit.storage import atomic_path

_tensorboard_note_shown = False


class CSVLog:
    """Appends one row per logged step to ``log.csv``; keeps earlier rows when a run resumes."""

    def __init__(self, path: Path, fields: list[str], start_step: int = 0):
        self.path, self.fields = path, ["step", "time"] + fields
        self.start = time.time()
        if start_step == 0 or not path.exists():
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        else:
            self._drop_rows_after(start_step)

    def _drop_rows_after(self, step: int) -> None:
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        if len(kept) != len(rows):
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(kept)

    def write(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            row = [step, round(time.time() - self.start, 2)] + [values.get(k, "") for k in self.fields[2:]]
            csv.writer(f).writerow(row)


def tensorboard_writer(folder: Path, start_step: int):
    """A ``SummaryWriter`` on ``folder``, or None (with a one-time note) when tensorboard is not installed.

    ``purge_step`` makes TensorBoard hide the events a crashed run wrote after its last checkpoint.
    """
    global _tensorboard_note_shown
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        if not _tensorboard_note_shown:
            _tensorboard_note_shown = True
            print("note: no TensorBoard logs without the tensorboard package (pip install tensorboard); "
                  "log.csv is written",
                  file=sys.stderr)
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=start_step if start_step > 0 else None)


class RunLog:
    """The CSV and TensorBoard logs of one run; a no-op on ranks other than 0."""

    def __init__(self, out: Path, fields: list[str], start_step: int, enabled: bool, tensorboard: bool):
        self.csv = CSVLog(out / "log.csv", fields, start_step) if enabled else None
        self.tb = tensorboard_writer(out / "tensorboard", start_step) if enabled and tensorboard else None

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.csv is not None:
            self.csv.write(step, values)
        if self.tb is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
