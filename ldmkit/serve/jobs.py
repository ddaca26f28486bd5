"""The job queue: one worker thread runs the model, one job at a time, fed by a bounded queue.

Why one worker: on a CPU the model already uses every core for one batch (and on a GPU one batch
fills the device), so running two jobs at once makes both slower and doubles the memory. A job that
cannot be queued is refused at once (`QueueFull`, which the API answers with 503 and Retry-After)
rather than left to wait without bound.

Every job has a deadline, ``timeout`` seconds after it was submitted, counting the wait in the queue
and the run. A queued job past its deadline is dropped; a running one is stopped between two sampler
steps: the step callback raises `JobStopped`, which unwinds the sampler. Cancelling works the same way,
and so does closing the queue when the server shuts down (`SHUTTING_DOWN`).

A job whose pipeline raises `UsageError` asked for something the model cannot do: it fails as ``refused``,
which the API answers as the request's mistake (422), not the model's (500).
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import Callable

from PIL import Image

from ldmkit.serve.schemas import JobState, Settings
from ldmkit.errors import UsageError

log = logging.getLogger("ldmkit.serve")

SHUTTING_DOWN = "the server is shutting down"  # what a job ended by `JobQueue.close` reports
StepCallback = Callable[[int, int], None]
RunFn = Callable[[Settings, StepCallback], list[Image.Image]]


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs already; try again in ``retry_after`` seconds."""

    def __init__(self, max_queue: int, retry_after: int):
        super().__init__(f"the queue is full ({max_queue} jobs waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class QueueClosed(Exception):
    """The queue takes no more jobs: the server is shutting down."""

    def __init__(self):
        super().__init__(SHUTTING_DOWN)


class JobStopped(Exception):
    """Raised from the step callback to stop a running job between two sampler steps."""

    def __init__(self, state: JobState, message: str):
        super().__init__(message)
        self.state = state


class Job:
    """One request: its settings, where it stands, and (once done) its images as PNG bytes.

    The worker thread writes the fields; request handlers read them. ``state`` is written last when a
    job finishes, so a reader that sees a finished state also sees its images or error. ``refused``: the
    job failed on its request's own mistake (the pipeline's `UsageError`, whose message is ``error``).
    """

    def __init__(self, settings: Settings, timeout: float, now: float):
        self.id = uuid.uuid4().hex  # also the file-name stem in the output folder: never user text
        self.settings = settings
        self.created = now
        self.deadline = now + timeout
        self.started: float | None = None  # when the worker took it (the queue's clock)
        self.finished_at: float | None = None
        self.state = JobState.queued
        self.step = 0
        self.total = settings.steps
        self.images: list[bytes] = []
        self.error: str | None = None
        self.refused = False
        self.stop_request: JobStopped | None = None
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def elapsed(self, now: float) -> float:
        return (self.finished_at if self.finished_at is not None else now) - self.created

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (from the worker thread) when the job finishes; at once if it has."""
        with self._lock:
            if not self.state.finished:
                self._listeners.append(fn)
                return
        fn()

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _finish(self, state: JobState, now: float, images: list[bytes] = (), error: str | None = None,
                refused: bool = False) -> None:
        with self._lock:
            if self.state.finished:
                return
            self.images = list(images)
            self.error = error
            self.refused = refused
            self.finished_at = now
            self.state = state
            listeners, self._listeners = self._listeners, []
        for fn in listeners:
            fn()


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class JobQueue:
    """Submit jobs, follow them, cancel them; a worker thread runs them in order.

    ``run(settings, on_step)`` makes the images and calls ``on_step(i, n)`` after each sampler step.
    ``max_queue`` bounds the jobs waiting (the running one not counted); ``timeout`` is each job's
    deadline in seconds from submission; the last ``keep`` finished jobs stay readable;
    ``on_done(job)`` runs in the worker after a job succeeds (e.g. to save its images).
    """

    def __init__(self, run: RunFn, max_queue: int = 8, timeout: float = 300.0, keep: int = 64,
                 on_done: Callable[[Job], None] | None = None, clock: Callable[[], float] = time.monotonic):
        if max_queue < 1:
            raise UsageError(f"max_queue must be at least 1, got {max_queue}")
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, got {timeout}")
        self.run = run
        self.max_queue = max_queue
        self.timeout = timeout
        self.keep = keep
        self.on_done = on_done
        self.clock = clock
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: Job | None = None
        self._mean_run_s = 1.0  # a first guess for Retry-After until a job has run
        self._runs = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="ldmkit-serve-worker", daemon=True)

    # ---------------------------------------------------------------------------------------------
    # for request handlers

    def start(self) -> None:
        self._thread.start()

    def close(self, wait: float = 10.0) -> None:
        """Stop taking jobs, cancel the waiting ones (their error `SHUTTING_DOWN`), stop the running one at its
        next step, and wait up to ``wait`` seconds for the worker to end (0: return at once). Closing twice is
        closing once."""
        with self._cond:
            self._closed = True
            now = self.clock()
            while self._pending:
                self._pending.popleft()._finish(JobState.cancelled, now, error=SHUTTING_DOWN)
            if self._running is not None:
                self._running.stop_request = JobStopped(JobState.cancelled, SHUTTING_DOWN)
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(wait)

    @property
    def closed(self) -> bool:
        """Whether `close` has begun: no job is taken, none will run."""
        return self._closed

    def submit(self, settings: Settings) -> Job:
        """Queue a job; `QueueFull` when ``max_queue`` jobs are waiting already, `QueueClosed` once closed."""
        with self._cond:
            if self._closed:
                raise QueueClosed()
            self._expire()
            if len(self._pending) >= self.max_queue:
                raise QueueFull(self.max_queue, self._retry_after())
            job = Job(settings, self.timeout, self.clock())
            self._pending.append(job)
            self._jobs[job.id] = job
            self._forget_old()
            self._cond.notify()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            self._expire()
            return self._jobs.get(job_id)

    def cancel(self, job: Job, state: JobState = JobState.cancelled, message: str = "cancelled") -> None:
        """Stop ``job``: at once if it waits, at its next sampler step if it runs; no-op once finished."""
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)
                job._finish(state, self.clock(), error=message)
            elif job is self._running:
                job.stop_request = JobStopped(state, message)

    def position(self, job: Job) -> int | None:
        """1 for the job that runs next, 2 after it, …; None once it has left the queue."""
        with self._cond:
            try:
                return self._pending.index(job) + 1
            except ValueError:
                return None

    def timeout_message(self) -> str:
        """What a job that missed its deadline reports."""
        return f"the job did not finish within the server's timeout of {self.timeout:g} s"

    def running(self) -> Job | None:
        """The job the worker runs now, or None."""
        with self._cond:
            return self._running

    def load(self) -> tuple[int, bool]:
        """(jobs waiting, whether one is running)."""
        with self._cond:
            return len(self._pending), self._running is not None

    # ---------------------------------------------------------------------------------------------
    # internals (callers hold self._cond)

    def _retry_after(self) -> int:
        # A place in the queue frees up when the running job ends: about one job's time.
        return max(1, math.ceil(self._mean_run_s))

    def _expire(self) -> None:
        now = self.clock()
        for job in [j for j in self._pending if now > j.deadline]:
            self._pending.remove(job)
            job._finish(JobState.timeout, now, error=self.timeout_message())

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state.finished]
        for job in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]

    # ---------------------------------------------------------------------------------------------
    # the worker thread

    def _work(self) -> None:
        while True:
            with self._cond:
                self._expire()
                while not self._pending and not self._closed:
                    self._cond.wait()
                    self._expire()
                if self._closed:
                    return
                job = self._pending.popleft()
                job.state = JobState.running
                self._running = job
                started = job.started = self.clock()
            refused = False
            try:
                images = [encode_png(im) for im in self.run(job.settings, lambda i, n: self._on_step(job, i, n))]
                if self.on_done is not None:
                    job.images = images  # on_done reads them; the state still says running
                    self.on_done(job)
                state, error = JobState.done, None
            except JobStopped as e:
                state, images, error = e.state, [], str(e)
            except UsageError as e:  # the request asked what the model cannot do: its mistake, not a bug
                log.info("job %s refused: %s", job.id, e)
                state, images, error, refused = JobState.failed, [], str(e), True
            except Exception as e:  # a bug or an out-of-memory: report it on the job, keep serving
                log.exception("job %s failed", job.id)
                state, images, error = JobState.failed, [], f"{type(e).__name__}: {e}"
            with self._cond:
                now = self.clock()
                self._running = None
                if state is JobState.done:
                    # An exponential mean follows a change of settings (more steps, bigger images).
                    w = 1.0 if self._runs == 0 else 0.3
                    self._mean_run_s += w * (now - started - self._mean_run_s)
                    self._runs += 1
                job._finish(state, now, images, error, refused)
                self._forget_old()

    def _on_step(self, job: Job, i: int, n: int) -> None:
        job.step, job.total = i + 1, n
        if job.stop_request is not None:
            raise job.stop_request
        if self.clock() > job.deadline:
            raise JobStopped(JobState.timeout, self.timeout_message())
