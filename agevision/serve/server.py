"""`agevision serve`: the HTTP API (versioned under /v1, OpenAPI docs at /docs) and the web page.

In: a `ServerConfig`. `create_app(config)` builds the FastAPI app around one shared model
(`Estimator`, its calls gathered into batches by `batching.Batcher`), a still-photo face
finder, the video job store and runner (`jobs`), and the live stream (`stream`).
Routes: GET /v1/health; POST /v1/images (multipart `file` fields, or one image as the raw
body); POST /v1/videos -> 202 {"id"}; GET /v1/videos/{id}; GET /v1/videos/{id}/{result};
DELETE /v1/videos/{id}; WS /v1/stream; GET / (the page). Every error is a JSON body
{"error": ...} with a 4xx status; nothing answers with a traceback.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import Request, WebSocket  # at module level: FastAPI reads the routes' annotations from here

from agevision.errors import AgevisionError
from agevision.serve.jobs import RESULTS

API = "/v1"
VIDEO_SUFFIXES = {"video/mp4": ".mp4", "video/quicktime": ".mov", "video/x-matroska": ".mkv", "video/webm": ".webm",
                  "video/x-msvideo": ".avi", "application/octet-stream": ".mp4"}


@dataclass
class ServerConfig:
    """host, port: where to listen. token: the bearer token every request must carry (None:
    none asked; required off the loopback). data: folder for jobs (SQLite and files).
    Limits: max_image_bytes, max_video_bytes (uploads), max_video_seconds, max_jobs
    (queued or running at once), max_images (per request). window: seconds to gather
    estimates into one batch (0: none). backend, device, weights: the model's."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    data: Path = field(default_factory=lambda: Path("agevision-serve"))
    max_image_bytes: int = 20 << 20
    max_video_bytes: int = 500 << 20
    max_video_seconds: float = 30 * 60
    max_jobs: int = 4
    max_images: int = 16
    window: float = 0.01
    backend: str = "auto"
    device: str | None = None
    weights: Path | None = None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: ServerConfig) -> None:
    """AgevisionError for a server that must not start: off the loopback without a token."""
    if not is_loopback(config.host) and not config.token:
        raise AgevisionError(f"--host {config.host} opens the server to the network: give --token (or set "
                             "AGEVISION_TOKEN); every request must then carry it")
    if config.token is not None and len(config.token) < 8:
        raise AgevisionError("--token must be at least 8 characters")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


API_FIELDS = ("box", "track_id", "age", "age_low", "age_high", "gender", "p_female", "quality", "readable")


def faces_json(faces) -> list[dict]:
    """The faces of a Faces record as the API gives them: the fields of their JSONL records
    (`records.face_records`, the one home of their rounding and of "?"), and the keypoints;
    track_id None where no tracker ran."""
    from agevision.records import face_records

    out = []
    for i, rec in enumerate(face_records(faces, 0, 0.0)):
        face = {k: rec[k] for k in API_FIELDS}
        face["keypoints"] = [[round(float(x), 1), round(float(y), 1)] for x, y in faces.keypoints[i]]
        if face["track_id"] < 0:
            face["track_id"] = None
        out.append(face)
    return out


class Service:
    """What the routes share: the model, the batcher, the photo face finder, the jobs."""

    def __init__(self, config: ServerConfig) -> None:
        from agevision.defaults import TILE_SIZE
        from agevision.detect import StillFaceFinder
        from agevision.model.estimator import Estimator
        from agevision.pipeline import share_cpu
        from agevision.serve.batching import Batcher
        from agevision.serve.jobs import JobRunner, JobStore

        self.config = config
        self.estimator = Estimator(config.weights, config.device, backend=config.backend)
        share_cpu(self.estimator)
        self.batcher = Batcher(self.estimator, window=config.window)
        self.finder = StillFaceFinder("full", tile_size=TILE_SIZE)
        self.finder_lock = threading.Lock()  # MediaPipe graphs: one caller at a time
        self.store = JobStore(config.data)
        self.runner = JobRunner(self.store, lambda: self.estimator)
        for job in self.store.recover():
            self.runner.submit(job)

    def read_image(self, data: bytes, name: str):
        """(image, faces with estimates) of one uploaded image; ApiError 4xx for a bad one."""
        from agevision import align
        from agevision.images import decode_bgr
        from agevision.labels import gender_labels
        from agevision.quality import assess

        if len(data) > self.config.max_image_bytes:
            raise ApiError(413, f"{name} is over {self.config.max_image_bytes >> 20} MB")
        try:
            image = decode_bgr(data, name)
        except AgevisionError as err:
            raise ApiError(415 if "not a readable" in str(err) else 413, str(err)) from None
        with self.finder_lock:
            faces = self.finder.find(image)
        faces.quality, faces.readable = assess(image, faces)
        read = np.asarray(faces.readable, bool)
        if read.any():
            card = self.estimator.card
            pred = self.batcher.predict(align.align_crops(image, faces.subset(read), self.estimator.input_size,
                                                         card.denoise, card.crop))
            for key in ("age", "age_low", "age_high", "p_female"):
                getattr(faces, key)[read] = getattr(pred, key)
        faces.gender = gender_labels(faces.p_female, read)
        return image, faces

    def close(self) -> None:
        self.runner.close()
        self.batcher.close()
        self.finder.close()
        self.store.close()


def create_app(config: ServerConfig):
    """The FastAPI app (see module doc)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from agevision import __version__

    check_config(config)
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="agevision", version=__version__, description="Age and gender estimation from faces.",
                  docs_url="/docs", openapi_url=f"{API}/openapi.json", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, err: RequestValidationError):
        return JSONResponse({"error": "bad request: " + "; ".join(str(e.get("msg")) for e in err.errors())},
                            status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        return JSONResponse({"error": f"internal error ({type(err).__name__})"}, status_code=500)

    @app.middleware("http")
    async def _token(request: Request, call_next):
        if config.token and request.url.path.startswith(API) and not _authorised(request.headers, config.token):
            return JSONResponse({"error": "missing or wrong token (Authorization: Bearer ...)"}, status_code=401)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse((Path(__file__).parent / "page.html").read_text(encoding="utf-8"))

    @app.get(f"{API}/health")
    def health():
        """Model loaded, where it runs, the model card's version."""
        est = service.estimator
        return {"ok": True, "agevision": __version__, "backend": est.backend, "device": str(est.device),
                "model": est.card.architecture, "model_sha256": est.card.tensors_sha256,
                "jobs": {"queued": service.store.count("queued"), "running": service.store.count("running")},
                "batching": {"window_ms": config.window * 1000, "requests": service.batcher.calls,
                             "model_runs": service.batcher.batches}}

    @app.post(f"{API}/images")
    async def images(request: Request, annotate: bool = False):
        """Faces in one or several images (multipart `file` fields, or one image as the body)."""
        from starlette.concurrency import run_in_threadpool

        items = await _image_uploads(request, config)
        results = []
        for name, data in items:
            image, faces = await run_in_threadpool(service.read_image, data, name)
            if annotate:
                import cv2

                from agevision.render import Renderer

                ok, jpeg = cv2.imencode(".jpg", Renderer(show_hud=False).draw(image.copy(), faces))
                return Response(jpeg.tobytes(), media_type="image/jpeg")
            results.append({"name": name, "width": image.shape[1], "height": image.shape[0],
                            "faces": faces_json(faces)})
        return {"images": results}

    @app.post(f"{API}/videos", status_code=202)
    async def videos(request: Request):
        """A video job: 202 with its id; it runs in the background."""
        return await _video_upload(request, service)

    @app.get(f"{API}/videos/{{job}}")
    def video_state(job: str):
        row = service.store.get(job)
        if row is None:
            raise ApiError(404, "no such job")
        out = {k: row[k] for k in ("id", "state", "name", "people", "error")}
        out["progress"] = {"frames_done": row["frames_done"], "frames_total": row["frames_total"]}
        if row["state"] == "done":
            out["results"] = {name: f"{API}/videos/{job}/{name}" for name in RESULTS}
        return out

    @app.get(f"{API}/videos/{{job}}/{{result}}")
    def video_result(job: str, result: str):
        row = service.store.get(job)
        if row is None:
            raise ApiError(404, "no such job")
        if result not in RESULTS:
            raise ApiError(404, f"no result {result!r}: one of {', '.join(RESULTS)}")
        if row["state"] != "done":
            raise ApiError(409, f"the job is {row['state']}")
        path = service.store.path(job) / result
        if not path.is_file():
            raise ApiError(404, f"{result} was not made")
        if result == "report.html":
            return HTMLResponse(path.read_text(encoding="utf-8"))
        return FileResponse(path, media_type=RESULTS[result], filename=result)

    @app.delete(f"{API}/videos/{{job}}")
    def video_delete(job: str):
        if service.store.get(job) is None:
            raise ApiError(404, "no such job")
        service.runner.cancel(job)
        service.store.delete(job)
        return {"deleted": job}

    @app.websocket(f"{API}/stream")
    async def stream(ws: WebSocket):
        from agevision.serve.stream import serve_stream

        if config.token and not (hmac.compare_digest(ws.query_params.get("token", ""), config.token)
                                 or _authorised(ws.headers, config.token)):
            await ws.accept()  # then closed with a reason the page can show (a refused handshake says nothing)
            await ws.close(code=4401, reason="missing or wrong token")
            return
        await serve_stream(ws, service)

    return app


def _authorised(headers, token: str) -> bool:
    given = headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip(), token)


async def _read_body(request, limit: int, what: str) -> bytes:
    """The request body, at most `limit` bytes (ApiError 413 beyond, 400 if cut short)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{what} is over {limit >> 20} MB")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"{what} is over {limit >> 20} MB")
            chunks.append(chunk)
    except ApiError:
        raise
    except Exception:  # noqa: BLE001 - the client went away mid-upload
        raise ApiError(400, f"{what} was cut short") from None
    data = b"".join(chunks)
    if declared and declared.isdigit() and len(data) != int(declared):
        raise ApiError(400, f"{what} was cut short")
    return data


async def _form_files(request, limit: int, what: str) -> list[tuple[str, bytes, str]]:
    """(filename, data, content type) of the multipart `file` fields."""
    from starlette.datastructures import UploadFile

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{what} is over {limit >> 20} MB")
    try:
        form = await request.form(max_files=64, max_fields=64, max_part_size=limit)
    except Exception as err:  # noqa: BLE001 - a malformed or truncated multipart body
        raise ApiError(400, f"bad multipart body: {str(err).splitlines()[0] if str(err) else type(err).__name__}") \
            from None
    files = []
    for key, value in form.multi_items():
        if key == "file" and isinstance(value, UploadFile):
            data = await value.read()
            files.append((Path(value.filename or "upload").name or "upload", data, value.content_type or ""))
    await form.close()
    if not files:
        raise ApiError(400, "no 'file' field in the multipart body")
    return files


async def _image_uploads(request, config: ServerConfig) -> list[tuple[str, bytes]]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        files = await _form_files(request, config.max_image_bytes * config.max_images, "the upload")
        if len(files) > config.max_images:
            raise ApiError(413, f"at most {config.max_images} images a request")
        return [(name, data) for name, data, _ in files]
    if kind.startswith("image/"):
        return [("image", await _read_body(request, config.max_image_bytes, "the image"))]
    raise ApiError(415, f"send an image (image/jpeg, image/png...) or multipart/form-data, not {kind or 'nothing'}")


async def _video_upload(request, service: Service) -> dict:
    from agevision.files import write_atomic
    from agevision.sources import VideoSource

    config = service.config
    if service.store.count("queued", "running") >= config.max_jobs:
        raise ApiError(429, f"{config.max_jobs} video jobs are queued or running: try again later")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ApiError(415, "send the video as multipart/form-data, field 'file'")
    files = await _form_files(request, config.max_video_bytes, "the video")
    name, data, _ = files[0]
    suffix = Path(name).suffix.lower()
    if suffix not in {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}:
        suffix = ".mp4"
    job = service.store.create(name[:200])
    target = service.store.path(job) / f"input{suffix}"  # a server-chosen name, never the client's path
    write_atomic(target, data)
    try:
        with VideoSource(target) as src:
            seconds = src.frame_count / float(src.fps) if src.fps else 0
    except AgevisionError as err:
        service.store.delete(job)
        raise ApiError(415, f"{name} is not a readable video: {err}") from None
    if seconds > config.max_video_seconds:
        service.store.delete(job)
        raise ApiError(413, f"{name} is {seconds / 60:.1f} min long, over the {config.max_video_seconds / 60:g} min "
                            "this server takes")
    service.runner.submit(job)
    return {"id": job, "state": "queued", "status": f"{API}/videos/{job}"}


def serve(config: ServerConfig) -> None:
    """Run the server until Ctrl-C (uvicorn, one process)."""
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", ws_max_size=8 << 20)
