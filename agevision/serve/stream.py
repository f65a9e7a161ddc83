"""WS /v1/stream: a live camera, frame by frame, with tracks and smoothed labels.

The client sends each frame as one binary message (a JPEG or PNG). The server answers
each frame it reads with one JSON text message: {"seq": n (the frame's number, from 1, in
the order received), "width", "height", "faces": [...] (with track ids and smoothed
labels), "dropped": frames skipped so far, "ms": server milliseconds}. Frames that
arrive while one is being read wait in a queue of QUEUE; when it is full the oldest is
dropped, so the answer is never more than a couple of frames behind. A message that is
not a picture gets {"seq": n, "error": ...} and the stream goes on. One tracker and
smoother per connection: each browser tab has its own people.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

QUEUE = 2


async def serve_stream(ws, service) -> None:
    from starlette.concurrency import run_in_threadpool
    from starlette.websockets import WebSocketDisconnect

    from agevision.defaults import DETECT_EVERY, MIN_FACE
    from agevision.errors import AgevisionError
    from agevision.images import decode_bgr
    from agevision.pipeline import FrameProcessor
    from agevision.serve.server import faces_json

    await ws.accept()
    waiting: deque = deque()
    ready = asyncio.Event()
    state = {"seq": 0, "dropped": 0, "open": True}

    async def receive() -> None:
        try:
            while True:
                message = await ws.receive()
                if message.get("type") == "websocket.disconnect":
                    break
                state["seq"] += 1
                data = message.get("bytes")
                if data is None:
                    data = (message.get("text") or "").encode()
                if len(waiting) >= QUEUE:
                    waiting.popleft()
                    state["dropped"] += 1
                waiting.append((state["seq"], data))
                ready.set()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            state["open"] = False
            ready.set()

    reader = asyncio.create_task(receive())
    processor = await run_in_threadpool(FrameProcessor, service.estimator, "short", MIN_FACE, True, None,
                                        DETECT_EVERY, 0)
    try:
        while True:
            await ready.wait()
            ready.clear()
            while waiting:
                seq, data = waiting.popleft()
                t0 = time.perf_counter()
                try:
                    frame = decode_bgr(data, f"frame {seq}")
                except AgevisionError as err:
                    await ws.send_json({"seq": seq, "error": str(err), "dropped": state["dropped"]})
                    continue
                result = await run_in_threadpool(processor.process, frame)
                await ws.send_json({"seq": seq, "width": frame.shape[1], "height": frame.shape[0],
                                    "faces": faces_json(result.faces),
                                    "dropped": state["dropped"], "ms": round(1000 * (time.perf_counter() - t0), 1)})
            if not state["open"]:
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        await run_in_threadpool(processor.close)
