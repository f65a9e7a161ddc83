"""Video jobs of the server: kept on disk, run in the background with the video pipeline.

`JobStore` is a SQLite file (stdlib) under the server's data folder: one row per job (id,
state queued / running / done / failed, frames done and in all, error, times); a job's
files live in `jobs/<id>/` (input.<ext>, annotated.mp4, records.jsonl, people.csv and its
thumbnails, report.html). `JobRunner` runs queued jobs one at a time on a thread.

On start, a job left "running" by a server that stopped is marked failed with the reason
("the server stopped while it ran"), and queued jobs are queued again: no job is lost
silently or left running.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from agevision.errors import AgevisionError

STATES = ("queued", "running", "done", "failed")
RESULTS = {"annotated.mp4": "video/mp4", "records.jsonl": "application/x-ndjson", "people.csv": "text/csv",
           "report.html": "text/html"}


class JobStore:
    """The jobs table in `folder/jobs.sqlite3`, and each job's folder `folder/jobs/<id>/`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        (self.folder / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.folder / "jobs.sqlite3"), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, name TEXT, "
                         "frames_done INTEGER DEFAULT 0, frames_total INTEGER DEFAULT 0, people INTEGER, error TEXT, "
                         "created REAL, finished REAL)")

    def recover(self) -> list[str]:
        """After a restart: running jobs failed (with the reason), queued ones returned to run again."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state='failed', error='the server stopped while it ran; submit the "
                             "video again', finished=? WHERE state='running'", (time.time(),))
            rows = self._db.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY created").fetchall()
        return [r[0] for r in rows]

    def create(self, name: str) -> str:
        job = uuid.uuid4().hex
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, state, name, created) VALUES (?, 'queued', ?, ?)",
                             (job, name, time.time()))
        self.path(job).mkdir(parents=True, exist_ok=True)
        return job

    def path(self, job: str) -> Path:
        """The job's folder (the id is checked: 32 hex digits, never a client's path)."""
        if len(job) != 32 or any(c not in "0123456789abcdef" for c in job):
            raise KeyError(job)
        return self.folder / "jobs" / job

    def get(self, job: str) -> dict | None:
        try:
            self.path(job)
        except KeyError:
            return None
        with self._lock:
            row = self._db.execute("SELECT id, state, name, frames_done, frames_total, people, error, created, "
                                   "finished FROM jobs WHERE id=?", (job,)).fetchone()
        if row is None:
            return None
        keys = ("id", "state", "name", "frames_done", "frames_total", "people", "error", "created", "finished")
        return dict(zip(keys, row, strict=True))

    def update(self, job: str, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job))

    def count(self, *states: str) -> int:
        marks = ",".join("?" * len(states))
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", states).fetchone()[0]

    def delete(self, job: str) -> bool:
        if self.get(job) is None:
            return False
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id=?", (job,))
        shutil.rmtree(self.path(job), ignore_errors=True)
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JobRunner:
    """Runs queued jobs, one at a time, on a thread: the video through `videojob.run_job`
    into the job's folder, then the report. make_estimator: a function giving the shared
    model; options: a `videojob.VideoOptions` (default: `agevision video`'s)."""

    def __init__(self, store: JobStore, make_estimator, options=None) -> None:
        import queue

        from agevision.videojob import VideoOptions

        self.store, self.make_estimator = store, make_estimator
        self.options = options or VideoOptions()
        self._queue: queue.Queue = queue.Queue()
        self._cancelled: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="video-jobs", daemon=True)
        self._thread.start()

    def submit(self, job: str) -> None:
        self._queue.put(job)

    def cancel(self, job: str) -> None:
        """A job deleted while queued or running: skipped, or its outputs discarded."""
        self._cancelled.add(job)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if job in self._cancelled or self.store.get(job) is None:
                continue
            self._one(job)

    def _one(self, job: str) -> None:
        from agevision.report import write_report
        from agevision.videojob import VideoJob, run_job

        folder = self.store.path(job)
        inputs = sorted(folder.glob("input.*"))
        self.store.update(job, state="running")
        try:
            if not inputs:
                raise AgevisionError("the upload is missing")
            spec = VideoJob(inputs[0], out=folder / "annotated.mp4", json=folder / "records.jsonl",
                            summary=folder / "people.csv", options=self.options)

            def progress(n: int, total: int, fps) -> None:
                if job in self._cancelled:
                    raise AgevisionError("deleted")
                if n % 10 == 0 or n == total:
                    self.store.update(job, frames_done=n, frames_total=total)

            result = run_job(spec, self.make_estimator(), progress)
            summary = result.summary  # thumbnails attached as the frames went by
            write_report(summary, folder / "report.html", title=self.store.get(job)["name"] or "video")
            self.store.update(job, state="done", frames_done=result.frames, frames_total=result.frame_count,
                              people=len(summary.people), finished=time.time())
        except Exception as err:  # noqa: BLE001 - a failed job says why; the server goes on
            if job not in self._cancelled:
                message = str(err) if isinstance(err, AgevisionError) else f"{type(err).__name__}: {err}"
                self.store.update(job, state="failed", error=message, finished=time.time())
        finally:
            for p in inputs:
                p.unlink(missing_ok=True)  # the upload is not kept once read
            if job in self._cancelled:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
