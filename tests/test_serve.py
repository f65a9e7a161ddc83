"""`agevision serve`: the real server on a free localhost port, over HTTP, WebSocket and a browser."""

import asyncio
import base64
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="agevision serve is an extra: pip install 'agevision[serve]'")
import httpx  # noqa: E402
import websockets  # noqa: E402

from tests.conftest import UTKFACE, VIDEOS, pick  # noqa: E402

D0 = VIDEOS / "LivePortrait__driving_d0.mp4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data: Path, *args: str, token: str | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        cmd = [sys.executable, "-m", "agevision", "serve", "--port", str(self.port), "--data", str(data), *args]
        if token:
            cmd += ["--token", token]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server ended: {self.proc.stderr.read()[-2000:]}")
            try:
                httpx.get(self.url + "/v1/health", headers=self.headers, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the server did not start")

    def get(self, path, **kw):
        return httpx.get(self.url + path, headers=self.headers, timeout=60, **kw)

    def post(self, path, **kw):
        return httpx.post(self.url + path, headers={**self.headers, **kw.pop("headers", {})}, timeout=60, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve") / "data", "--max-jobs", "2")
    yield s
    s.stop()


def _wait_done(server, job, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = server.get(f"/v1/videos/{job}").json()
        if state["state"] in ("done", "failed"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job} still {state['state']}")


def test_health_and_images_with_known_faces(server):
    health = server.get("/v1/health").json()
    assert health["ok"] and health["backend"] in ("onnx", "torch") and health["device"] == "cpu"
    woman, man = pick(UTKFACE, "30_1_0", 1)[0], pick(UTKFACE, "30_0_0", 1)[0]
    r = server.post("/v1/images", content=woman.read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    (face,) = r.json()["images"][0]["faces"]
    assert face["gender"] in ("F", "?") and 15 < face["age"] < 50 and face["age_low"] <= face["age"] <= face["age_high"]
    assert set(face) >= {"box", "keypoints", "p_female", "quality", "readable"}
    files = [("file", ("w.jpg", woman.read_bytes(), "image/jpeg")), ("file", ("m.jpg", man.read_bytes(), "image/jpeg"))]
    both = server.post("/v1/images", files=files).json()["images"]
    assert [b["name"] for b in both] == ["w.jpg", "m.jpg"] and both[1]["faces"][0]["gender"] in ("M", "?")
    r = server.post("/v1/images?annotate=true", files=files[:1])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    assert server.get("/v1/openapi.json").json()["info"]["title"] == "agevision"
    assert "getUserMedia" in server.get("/").text and "http" not in server.get("/").text.split("<script>")[0]


def test_a_video_job_to_its_results_and_away(server):
    r = server.post("/v1/videos", files=[("file", ("../../evil name.mp4", D0.read_bytes(), "video/mp4"))])
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    state = _wait_done(server, job)
    assert state["state"] == "done" and state["people"] == 1 and state["progress"]["frames_done"] == 78
    records = server.get(f"/v1/videos/{job}/records.jsonl").text.splitlines()
    assert json.loads(records[0])["type"] == "video" and json.loads(records[-1])["frames"] == 78
    assert server.get(f"/v1/videos/{job}/people.csv").text.startswith("person,")
    assert server.get(f"/v1/videos/{job}/annotated.mp4").content[4:8] == b"ftyp"
    assert "People in" in server.get(f"/v1/videos/{job}/report.html").text
    assert server.get(f"/v1/videos/{job}/input.mp4").status_code == 404  # the upload is not served
    assert httpx.delete(server.url + f"/v1/videos/{job}").json() == {"deleted": job}
    assert server.get(f"/v1/videos/{job}").status_code == 404


@pytest.mark.parametrize("send, status, says", [
    (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, "send an image"),
    (dict(content=b"not a png", headers={"Content-Type": "image/png"}), 415, "not a readable image"),
    (dict(content=b"x" * (21 << 20), headers={"Content-Type": "image/jpeg"}), 413, "over 20 MB"),
    (dict(files=[("other", ("a.jpg", b"abc", "image/jpeg"))]), 400, "no 'file' field"),
    (dict(content=b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\nabc",
          headers={"Content-Type": "multipart/form-data; boundary=xx"}), 400, "multipart"),
])
def test_bad_images_are_clear_4xx_json(server, send, status, says):
    r = server.post("/v1/images", **send)
    assert r.status_code == status and says in r.json()["error"], r.text


def test_bad_videos_and_jobs_are_clear_4xx_json(server, tmp_path):
    r = server.post("/v1/videos", files=[("file", ("x.mp4", b"not a video", "video/mp4"))])
    assert r.status_code == 415 and "not a readable video" in r.json()["error"]
    r = server.post("/v1/videos", content=D0.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    for path in ("/v1/videos/0123", "/v1/videos/" + "a" * 32, "/v1/videos/" + "a" * 32 + "/people.csv"):
        assert server.get(path).status_code == 404
    long = VIDEOS / "LivePortrait__driving_d6.mp4"  # 34 s: jobs pile up while the first runs
    answers = [server.post("/v1/videos", files=[("file", ("v.mp4", long.read_bytes(), "video/mp4"))])
               for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429] and "try again later" in answers[2].json()["error"]
    for a in answers[:2]:  # deleted while running or queued: gone, files and all
        job = a.json()["id"]
        assert httpx.delete(server.url + f"/v1/videos/{job}").status_code == 200
        assert server.get(f"/v1/videos/{job}").status_code == 404
    # a truncated upload: the connection ends before the promised bytes
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
                  + b"\xff\xd8" * 100)
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(4096).decode(errors="replace")
    assert answer == "" or " 400 " in answer.splitlines()[0]


def test_the_stream_tracks_drops_and_survives_bad_messages(server):
    import cv2

    from agevision.sources import VideoSource

    frames = []
    with VideoSource(D0) as src:
        for k, frame in enumerate(src):
            if k == 24:
                break
            frames.append(cv2.imencode(".jpg", frame)[1].tobytes())

    async def run():
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/stream") as ws:
            first = []
            for f in frames[:4]:  # one at a time: each answered
                await ws.send(f)
                first.append(json.loads(await ws.recv()))
            for f in frames[4:]:  # all at once: the oldest dropped, the answers stay near the newest
                await ws.send(f)
            await ws.send(b"garbage")
            await ws.send("not even bytes")
            rest = []
            while not rest or rest[-1]["seq"] < 26:
                rest.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return first, rest

    first, rest = asyncio.run(run())
    assert [m["seq"] for m in first] == [1, 2, 3, 4] and all(len(m["faces"]) == 1 for m in first)
    assert len({m["faces"][0]["track_id"] for m in first}) == 1  # one tracker per connection
    assert rest[-1]["dropped"] > 0 and "error" in rest[-1] and len(rest) < 22
    assert any("faces" in m and m["faces"][0]["age"] is not None for m in rest)


def test_token_rule(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agevision", "serve", "--host", "0.0.0.0", "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: --host 0.0.0.0")
    s = Server(tmp_path / "data", token="s3cret-token")
    try:
        assert httpx.get(s.url + "/v1/health").status_code == 401
        assert httpx.get(s.url + "/v1/health", headers={"Authorization": "Bearer wrong-one"}).status_code == 401
        assert s.get("/v1/health").status_code == 200 and httpx.get(s.url + "/").status_code == 200  # the page asks

        async def stream(query):
            async with websockets.connect(f"ws://127.0.0.1:{s.port}/v1/stream{query}") as ws:
                await ws.send(b"x")
                return json.loads(await asyncio.wait_for(ws.recv(), 10))

        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            asyncio.run(stream(""))
        assert closed.value.rcvd.code == 4401
        assert "error" in asyncio.run(stream("?token=s3cret-token"))
    finally:
        s.stop()


def test_a_restart_keeps_finished_jobs_fails_running_ones_and_runs_queued_ones(tmp_path):
    data = tmp_path / "data"
    s = Server(data)
    done = s.post("/v1/videos", files=[("file", ("d0.mp4", D0.read_bytes(), "video/mp4"))]).json()["id"]
    _wait_done(s, done)
    s.stop()
    db = sqlite3.connect(data / "jobs.sqlite3")
    db.execute("INSERT INTO jobs (id, state, name, created) VALUES (?, 'running', 'cut.mp4', 0)", ("b" * 32,))
    db.execute("INSERT INTO jobs (id, state, name, created) VALUES (?, 'queued', 'later.mp4', 1)", ("c" * 32,))
    db.commit()
    db.close()
    (data / "jobs" / ("b" * 32)).mkdir()
    (data / "jobs" / ("c" * 32)).mkdir()
    shutil.copy(D0, data / "jobs" / ("c" * 32) / "input.mp4")
    s = Server(data)
    try:
        assert s.get(f"/v1/videos/{done}").json()["state"] == "done"
        assert s.get(f"/v1/videos/{done}/people.csv").status_code == 200
        cut = s.get(f"/v1/videos/{'b' * 32}").json()
        assert cut["state"] == "failed" and "stopped while it ran" in cut["error"]
        assert _wait_done(s, "c" * 32)["state"] == "done"
    finally:
        s.stop()


def test_the_page_shows_labelled_boxes_from_a_fake_camera(server, tmp_path):
    import av

    from agevision.sources import VideoSource

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed for this test (.ci/run installs it: apt-get install chromium)"
    clip = tmp_path / "camera.y4m"
    with VideoSource(D0) as src, av.open(str(clip), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for frame in src:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    port = _free_port()
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update",
                                f"--remote-debugging-port={port}", "--use-fake-device-for-media-stream",
                                "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}",
                                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900",
                                f"{server.url}/?autostart=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status, shot = asyncio.run(_watch_page(port))
    finally:
        browser.terminate()
        browser.wait(timeout=20)
    assert int(status["labelled"]) > 5 and status["lastLabel"][0] in "FM?", status
    assert "FPS" in status["hud"] and "round trip" in status["hud"] and not status["err"]
    (tmp_path / "page.png").write_bytes(shot)  # looked at by hand: the face boxed, its label above
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"


async def _watch_page(port: int):
    for _ in range(100):
        try:
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
            break
        except OSError:
            await asyncio.sleep(0.2)
    url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
    async with websockets.connect(url, max_size=64 << 20) as ws:
        n = 0

        async def call(method, params=None):
            nonlocal n
            n += 1
            await ws.send(json.dumps({"id": n, "method": method, "params": params or {}}))
            while True:
                m = json.loads(await ws.recv())
                if m.get("id") == n:
                    return m

        expression = ("JSON.stringify(Object.assign({}, document.getElementById('status').dataset, "
                      "{hud: document.getElementById('hud').textContent, "
                      "err: document.getElementById('error').textContent}))")
        status = {}
        for _ in range(120):
            value = (await call("Runtime.evaluate", {"expression": expression, "returnByValue": True})) \
                .get("result", {}).get("result", {}).get("value")
            if value:
                status = json.loads(value)
                if int(status.get("labelled", 0)) > 5:
                    break
            await asyncio.sleep(0.25)
        shot = await call("Page.captureScreenshot", {"format": "png"})
        return status, base64.b64decode(shot["result"]["data"])



def test_mutated_images_never_break_the_server(server):
    import random

    rng = random.Random(7)
    photos = [p.read_bytes() for p in pick(UTKFACE, "4", 6)]
    codes = []
    for k in range(60):
        data = bytearray(photos[k % len(photos)])
        if k % 3 == 0:
            data = data[: rng.randrange(10, len(data))]
        for _ in range(rng.randrange(1, 30)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        r = server.post("/v1/images", content=bytes(data), headers={"Content-Type": "image/jpeg"})
        assert r.status_code in (200, 413, 415) and r.headers["content-type"].startswith("application/json"), r.text
        codes.append(r.status_code)
    assert server.get("/v1/health").json()["ok"] and codes.count(200) > 10
