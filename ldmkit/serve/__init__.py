"""HTTP API and web page for text-to-image generation.

One worker thread runs the model, one job at a time; requests wait in a bounded queue (a full queue
answers 503 with Retry-After) and every job has a deadline. The page at ``/`` and the JSON API under
``/v1`` are both thin shells over `JobQueue` and the `TextToImagePipeline` (and, for Prompt-to-Prompt
edits under ``/v1/edit``, a `PromptToPromptPipeline` over the same model).

    app = create_app(load_pipeline("runs/ldm"), model_name="runs/ldm")
    # or: ldmkit serve --model runs/ldm
"""

from ldmkit.serve.app import create_app
from ldmkit.serve.jobs import Job, JobQueue, QueueFull
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import JobState

__all__ = ["Job", "JobQueue", "JobState", "Limits", "QueueFull", "create_app"]
