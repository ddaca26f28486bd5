"""HTTP API and web page for one model or several, of any kind (text to image, class-conditional,
super-resolution, inpainting, colorization).

One worker thread runs the models, one job at a time; requests wait in a bounded queue (a full queue
answers 503 with Retry-After) and every job has a deadline. The page at ``/`` and the JSON API under
``/v1`` are both thin shells over `JobQueue` and the models' pipelines (and, for Prompt-to-Prompt edits
under ``/v1/edit``, a `PromptToPromptPipeline` over a text model). Every request names its model, or gets
the first one served.

    app = create_app(load_pipeline("runs/ldm"), model_name="runs/ldm")
    app = create_app(models=[served_model("text", load_pipeline("runs/ldm"), command_model="runs/ldm"),
                             served_model("sr", load_any_pipeline("runs/sr"), command_model="runs/sr")])
    # or: ldmkit serve --model text=runs/ldm --model sr=runs/sr
"""

from ldmkit.serve.app import create_app
from ldmkit.serve.jobs import Job, JobQueue, QueueFull
from ldmkit.serve.limits import Limits
from ldmkit.serve.schemas import JobState
from ldmkit.serve.served import ServedModel, served_model

__all__ = ["Job", "JobQueue", "JobState", "Limits", "QueueFull", "ServedModel", "create_app", "served_model"]
