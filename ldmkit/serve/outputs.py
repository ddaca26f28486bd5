"""Saving finished jobs to the server's output folder, and the names images go by.

File names are made here from the job id (a random UUID) and the image index only; nothing a client
sends becomes part of a path, so no request can write outside the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ldmkit.serve.jobs import Job
from ldmkit.storage import atomic_path


def image_filename(seed: int, index: int) -> str:
    """The name `ldmkit generate --out DIR` gives image ``index`` of a batch drawn from ``seed``."""
    return f"{seed}_{index:03d}.png"


def folder_saver(folder: str | Path) -> Callable[[Job], None]:
    """``on_done`` for `JobQueue`: write ``{job id}_{index}.png`` and ``{job id}.json`` (the settings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def save(job: Job) -> None:
        for index, png in enumerate(job.images):
            with atomic_path(folder / f"{job.id}_{index:03d}.png") as tmp:
                tmp.write_bytes(png)
        with atomic_path(folder / f"{job.id}.json") as tmp:
            tmp.write_text(job.settings.model_dump_json(indent=2) + "\n")

    return save
