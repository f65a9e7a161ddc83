"""Requests that arrive together, estimated in one batch: what makes a GPU pay off.

`Batcher.predict(crops)` (from any thread) waits for a `Prediction` of its crops; a worker
thread gathers the crops of every call that arrives within `window` seconds of the first
(up to `max_crops`), runs the model once on all of them, and hands each caller its rows.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np

from agevision.model.decode import Prediction


class Batcher:
    """One model, shared: window seconds to gather a batch (0: every call alone)."""

    def __init__(self, estimator, window: float = 0.01, max_crops: int = 64) -> None:
        self.estimator, self.window, self.max_crops = estimator, window, max_crops
        self._queue: queue.Queue = queue.Queue()
        self.batches = 0  # model runs so far (GET /v1/health shows them)
        self.calls = 0  # predict() calls those runs answered
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def predict(self, crops: np.ndarray) -> Prediction:
        """The Prediction of (N, S, S, 3) uint8 RGB crops (N may be 0)."""
        if len(crops) == 0:
            return self.estimator.predict(crops)
        done: Future = Future()
        self._queue.put((crops, done))
        return done.result()

    def _run(self) -> None:
        import time

        while True:
            first = self._queue.get()
            if first is None:
                return
            waiting = [first]
            total = len(first[0])
            deadline = time.perf_counter() + self.window
            while total < self.max_crops:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                waiting.append(item)
                total += len(item[0])
            try:
                pred = self.estimator.predict(np.concatenate([c for c, _ in waiting]))
            except BaseException as err:  # noqa: BLE001 - every caller hears of it
                for _, done in waiting:
                    done.set_exception(err)
                continue
            self.batches += 1
            self.calls += len(waiting)
            start = 0
            for crops, done in waiting:
                rows = slice(start, start + len(crops))
                done.set_result(Prediction(pred.age[rows], pred.age_low[rows], pred.age_high[rows],
                                           pred.p_female[rows], pred.age_probs[rows]))
                start += len(crops)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
