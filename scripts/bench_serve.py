"""How much does `agevision serve` take, batched and not?

    python scripts/bench_serve.py [--clients 8] [--requests 200] [--streams 2] [--frames 100]

Starts the server twice on localhost (a batching window of 10 ms, then none), and for each
runs, at the same time: `clients` threads posting UTKFace photos to /v1/images until
`requests` have been answered, and `streams` WebSocket clients sending clip frames to
/v1/stream one after the other (`frames` each). Prints per run: image requests a second,
p50 / p95 latency and errors, frames a second per stream with its p50 / p95 round trip;
then the batched / unbatched throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import UTKFACE, VIDEOS, run_script  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(window_ms: float, data: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "agevision", "serve", "--port", str(port), "--data", str(data),
                             "--window-ms", str(window_ms)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/v1/health", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def images(url: str, photos: list[bytes], clients: int, total: int) -> dict:
    import httpx

    latencies, errors, lock = [], [0], threading.Lock()
    left = [total]

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            n = k
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                t = time.perf_counter()
                r = http.post(url + "/v1/images", content=photos[n % len(photos)],
                              headers={"Content-Type": "image/jpeg"})
                with lock:
                    latencies.append(time.perf_counter() - t)
                    errors[0] += r.status_code != 200
                n += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    ms = sorted(1000 * x for x in latencies)
    return {"rate": len(ms) / wall, "p50": statistics.median(ms), "p95": ms[int(0.95 * (len(ms) - 1))],
            "errors": errors[0]}


def streams(url: str, frames: list[bytes], count: int) -> list[dict]:
    import json

    import websockets

    async def one() -> dict:
        trips = []
        async with websockets.connect(url.replace("http", "ws") + "/v1/stream", max_size=1 << 24) as ws:
            t0 = time.perf_counter()
            for f in frames:
                t = time.perf_counter()
                await ws.send(f)
                json.loads(await ws.recv())
                trips.append(1000 * (time.perf_counter() - t))
            wall = time.perf_counter() - t0
        trips.sort()
        return {"fps": len(frames) / wall, "p50": statistics.median(trips), "p95": trips[int(0.95 * (len(trips) - 1))]}

    async def all_of() -> list[dict]:
        return list(await asyncio.gather(*(one() for _ in range(count))))

    return asyncio.run(all_of()) if count else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    import cv2

    from agevision.sources import VideoSource

    photos = [p.read_bytes() for p in sorted(UTKFACE.glob("*.jpg"))[:64]]
    frames = []
    with VideoSource(VIDEOS / "LivePortrait__driving_d10.mp4") as src:
        for k, frame in enumerate(src):
            if k == args.frames:
                break
            frames.append(cv2.imencode(".jpg", frame)[1].tobytes())
    rows = []
    for window in (10.0, 0.0):
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = start(window, Path(tmp))
            try:
                out: dict = {}
                th = threading.Thread(target=lambda out=out, url=url: out.update(
                    streams=streams(url, frames, args.streams)))
                th.start()
                out["images"] = images(url, photos, args.clients, args.requests)
                th.join()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        rows.append((window, out))
    print(f"{args.clients} image clients x {args.requests} requests (UTKFace photos), {args.streams} streams x "
          f"{args.frames} frames (512 px), at the same time, on {sys.platform} localhost")
    for window, out in rows:
        im = out["images"]
        line = (f"window {window:4.0f} ms: images {im['rate']:6.1f}/s, p50 {im['p50']:6.1f} ms, "
                f"p95 {im['p95']:6.1f} ms, errors {im['errors']}")
        for k, s in enumerate(out["streams"]):
            line += f"; stream {k + 1}: {s['fps']:.1f} FPS, round trip p50 {s['p50']:.0f} / p95 {s['p95']:.0f} ms"
        print(line)
    (a, x), (b, y) = rows
    print(f"batched / unbatched image throughput: x{x['images']['rate'] / y['images']['rate']:.2f}")


if __name__ == "__main__":
    run_script(main)
