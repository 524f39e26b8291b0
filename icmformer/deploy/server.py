"""The HTTP interactor (``icmformer serve``): a FastAPI app around one :class:`Interactor`.

Endpoints (JSON in, JSON out; coordinates at the boundary are ``x, y`` pixels, column then row):

========================  =======================================================================
``GET /health``           ``{"status": "UP", ...}``: model, backend, cache and session counts
``POST /cvat``            CVAT's interactor convention: ``{image: base64, pos_points: [[x, y], ...],
                          neg_points: [...], threshold?, session?}`` -> ``{mask: H x W 0/255,
                          points: [[x, y], ...] (outline polygon), session, ...}``
``POST /sessions``        ``{image: base64}`` -> ``{session, width, height}``
``POST /sessions/{id}/clicks``  ``{clicks: [{x, y, positive}, ...] (in order), threshold?}`` -> as ``/cvat``
``POST /sessions/{id}/undo``    the session without its last click
``DELETE /sessions/{id}``       forget the session
``POST /predict``         Label Studio's ML-backend convention: tasks + keypoint clicks in percent
                          (``params.context.result``) -> ``brushlabels`` with Label Studio RLE
``POST /setup``           Label Studio's handshake: ``{model_version}``
========================  =======================================================================

Label Studio sends a task's image as a URL (``/data/upload/...``, relative to Label Studio) unless
it is inline (``data:image/...;base64,...``): with ``--label-studio-url`` (and its API key) the server
fetches such images from that Label Studio, and only from it (:class:`LabelStudioImages`).

Without a ``session`` field, ``/cvat`` uses the image's own session (keyed by the image's
content) and ``/predict`` one per task and image; either way successive clicks reuse the image
encoding and the previous probability map (see :mod:`icmformer.deploy.service`). Bad input gets a
4xx status and ``{"error": "<one line>"}``; an unexpected failure a 500 with one line, and the
server keeps running.
"""
from __future__ import annotations

import re
import traceback
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np

from icmformer.deploy.service import Interactor, RequestError, pixel_click, point_list, threshold_value

MASK_VALUE = 255


def _mask_payload(interactor: Interactor, result, threshold: float) -> dict:
    from icmformer.deploy.service import mask_polygon

    mask = result.prob > threshold
    h, w = mask.shape
    return {
        "session": result.session,
        "width": int(w),
        "height": int(h),
        "mask": (mask.astype(np.uint8) * MASK_VALUE).tolist(),
        "points": mask_polygon(mask),
        "area": int(mask.sum()),
        "clicks": [{"x": c.coords[1], "y": c.coords[0], "positive": bool(c.is_positive)} for c in result.clicks],
        "encoded": int(result.encoded),
        "predicted_clicks": int(result.predicted),
        "latency_ms": round(1000 * result.seconds, 2),
    }


def _body(body: object) -> dict:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


# ------------------------------------------------------------------------------ Label Studio
def _brush_control(label_config: object, override: tuple[str | None, str | None]) -> tuple[str, str, list[str]]:
    """``(from_name, to_name, labels)`` of the ``<BrushLabels>`` control of a labeling config."""
    from_name, to_name = override
    labels: list[str] = []
    if isinstance(label_config, str) and label_config.strip():
        try:
            root = ET.fromstring(label_config)
        except ET.ParseError:
            raise RequestError("label_config: not valid XML") from None
        for el in root.iter():
            if el.tag.lower() == "brushlabels":
                from_name = from_name or el.get("name")
                to_name = to_name or el.get("toName")
                labels = [c.get("value") for c in el if c.get("value") is not None]
                break
    return from_name or "tag", to_name or "image", labels


class LabelStudioImages:
    """Fetches task images from one Label Studio instance (``base_url``, e.g. ``http://host:8080``).

    A relative URL (``/data/upload/3/a.png``) is joined to ``base_url``; an absolute one must lie
    under it (the server fetches from Label Studio only, never from arbitrary hosts). The API key
    goes along as ``Authorization: Token <key>``. Responses over ``max_bytes`` are refused (413)."""

    def __init__(self, base_url: str | None, api_key: str | None = None, timeout: float = 20.0,
                 max_bytes: int = 64 * 2**20) -> None:  # fmt: skip
        self.base = None
        if base_url:
            parts = urllib.parse.urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"--label-studio-url must be an http(s) URL such as http://localhost:8080, got {base_url!r}")
            self.base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.api_key = api_key or None
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)

    def resolve(self, url: str) -> str:
        """The absolute URL to fetch for a task's image ``url``; a ``RequestError`` if it is not
        Label Studio's (or no ``--label-studio-url`` is set)."""
        if self.base is None:
            raise RequestError("task.data image is a URL; start the server with --label-studio-url (and "
                               "LABEL_STUDIO_API_KEY) to fetch it, or send images inline (data:image/...;base64,...)")  # fmt: skip
        if url.startswith("//"):
            url = urllib.parse.urlsplit(self.base).scheme + ":" + url
        elif url.startswith("/"):
            url = self.base + url
        if not (url == self.base or url.startswith(self.base + "/")):
            raise RequestError(f"task image URL {url[:200]} is not on --label-studio-url {self.base}; "
                               "this server fetches images from Label Studio only")  # fmt: skip
        return url

    def fetch(self, url: str) -> bytes:
        full = self.resolve(url)
        req = urllib.request.Request(full, headers={"Authorization": f"Token {self.api_key}"} if self.api_key else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read(self.max_bytes + 1)
        except urllib.error.HTTPError as e:
            raise RequestError(f"task image {full[:200]}: Label Studio answered HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RequestError(f"task image {full[:200]}: cannot reach Label Studio ({reason})", status=502) from None
        if len(data) > self.max_bytes:
            raise RequestError(f"task image {full[:200]}: more than {self.max_bytes} bytes", status=413)
        return data


def _task_image(interactor: Interactor, task: dict, key: str | None, images: LabelStudioImages | None = None):
    data = task.get("data")
    if not isinstance(data, dict) or not data:
        raise RequestError("task.data: expected an object holding the image")
    if key is not None:
        if key not in data:
            raise RequestError(f"task.data has no {key!r} field (--label-studio-image-key)")
        value = data[key]
    else:
        value = data.get("image")
        if value is None:
            strings = [v for v in data.values() if isinstance(v, str)]
            if len(strings) != 1:
                raise RequestError("task.data: cannot tell which field is the image; name it 'image'")
            value = strings[0]
    if isinstance(value, str) and re.match(r"^(https?:)?/", value):
        return interactor.image((images or LabelStudioImages(None)).fetch(value))
    return interactor.image_b64(value, "task image")


def _keypoint_clicks(results: list, size: tuple[int, int]):
    from icmformer.evaluation.clicker import Click

    h, w = size
    clicks, label = [], None
    for i, r in enumerate(results):
        if not isinstance(r, dict) or r.get("type") != "keypointlabels":
            continue
        value = r.get("value")
        if not isinstance(value, dict):
            raise RequestError(f"context.result[{i}].value: expected an object with x, y in percent")
        xs, ys = value.get("x"), value.get("y")
        for name, v in (("x", xs), ("y", ys)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise RequestError(f"context.result[{i}].value.{name}: expected a finite percentage, got {v!r}"[:200])
            if not 0 <= v <= 100:
                raise RequestError(f"context.result[{i}].value.{name}={v} lies outside the image (0..100 percent)")
        positive = r.get("is_positive", True)
        if not isinstance(positive, bool):
            raise RequestError(f"context.result[{i}].is_positive: expected true or false")
        c = pixel_click(min(xs * w / 100.0, w - 1), min(ys * h / 100.0, h - 1), positive, size, f"context.result[{i}]", len(clicks))
        clicks.append(Click(c.is_positive, c.coords, len(clicks)))
        kl = value.get("keypointlabels")
        if label is None and positive and isinstance(kl, list) and kl and isinstance(kl[0], str):
            label = kl[0]
    return clicks, label


# ------------------------------------------------------------------------------ the app
def create_app(interactor: Interactor, model_version: str = "icmformer", label_studio_names: tuple = (None, None),
               label_studio_image_key: str | None = None, info: dict | None = None,
               label_studio_images: LabelStudioImages | None = None):  # fmt: skip
    """The FastAPI application serving ``interactor`` (task image URLs fetched by ``label_studio_images``)."""
    from fastapi import Body, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(title="icmformer interactor", version="1", description="iCMFormer click segmentation for CVAT and Label Studio")
    app.state.interactor = interactor

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg, where = "the request body is not valid JSON", "body"
        return JSONResponse({"error": f"{where}: {msg}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        traceback.print_exception(exc)
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return JSONResponse({"error": f"internal error: {line}"}, status_code=500)

    @app.get("/health")
    def health():
        return {"status": "UP", "model_version": model_version, **(info or {}), **interactor.memory_items(),
                "stats": dict(interactor.stats)}  # fmt: skip

    @app.post("/setup")
    def setup(body: object = Body(None)):
        return {"model_version": model_version}

    @app.post("/cvat")
    def cvat(body: object = Body(...)):
        body = _body(body)
        thr = threshold_value(body.get("threshold"))
        sid = body.get("session")
        if sid is not None:
            session = interactor.session(sid)
            if body.get("image") is not None and interactor.image_b64(body["image"]).key != session.image.key:
                raise RequestError("image differs from the session's image; start a new session for a new image", status=409)
        else:
            if body.get("image") is None:
                raise RequestError("image: missing (a base64-encoded image)")
            session = None
            image = interactor.image_b64(body["image"])
        size = session.image.size if session is not None else image.size
        clicks = point_list(body.get("pos_points"), True, size, "pos_points") + point_list(body.get("neg_points"), False, size, "neg_points")
        if not any(c.is_positive for c in clicks):
            raise RequestError("pos_points: give at least one positive click")
        if session is None:
            session = interactor.session_for("cvat:", image, clicks)
        return _mask_payload(interactor, interactor.predict_unordered(session, clicks), thr)

    @app.post("/sessions")
    def new_session(body: object = Body(...)):
        body = _body(body)
        if body.get("image") is None:
            raise RequestError("image: missing (a base64-encoded image)")
        s = interactor.new_session(interactor.image_b64(body["image"]))
        h, w = s.image.size
        return {"session": s.id, "width": w, "height": h}

    @app.post("/sessions/{session_id}/clicks")
    def session_clicks(session_id: str, body: object = Body(...)):
        body = _body(body)
        session = interactor.session(session_id)
        thr = threshold_value(body.get("threshold"))
        raw = body.get("clicks")
        if not isinstance(raw, list) or not raw:
            raise RequestError("clicks: expected a non-empty list of {x, y, positive}")
        clicks = []
        for i, c in enumerate(raw):
            if not isinstance(c, dict) or "x" not in c or "y" not in c:
                raise RequestError(f"clicks[{i}]: expected {{x, y, positive}}")
            positive = c.get("positive", True)
            if not isinstance(positive, bool):
                raise RequestError(f"clicks[{i}].positive: expected true or false")
            clicks.append(pixel_click(c["x"], c["y"], positive, session.image.size, f"clicks[{i}]", i))
        return _mask_payload(interactor, interactor.predict(session, clicks), thr)

    @app.post("/sessions/{session_id}/undo")
    def session_undo(session_id: str, body: object = Body(None)):
        thr = threshold_value(body.get("threshold") if isinstance(body, dict) else None)
        return _mask_payload(interactor, interactor.undo(interactor.session(session_id)), thr)

    @app.delete("/sessions/{session_id}")
    def session_delete(session_id: str):
        interactor.drop_session(session_id)
        return {"deleted": session_id}

    @app.post("/predict")
    def predict(body: object = Body(...)):
        from icmformer.deploy.rle import encode_mask

        body = _body(body)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError("tasks: expected a non-empty list of Label Studio tasks")
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        context = params.get("context", body.get("context"))
        from_name, to_name, labels = _brush_control(body.get("label_config"), label_studio_names)
        out = []
        for ti, task in enumerate(tasks):
            if not isinstance(task, dict):
                raise RequestError(f"tasks[{ti}]: expected an object")
            results = context.get("result") if isinstance(context, dict) else None
            if not results:  # a pre-annotation call without clicks: nothing to say
                out.append({"result": [], "score": 0.0, "model_version": model_version})
                continue
            if not isinstance(results, list):
                raise RequestError("context.result: expected a list of keypoint results")
            image = _task_image(interactor, task, label_studio_image_key, label_studio_images)
            clicks, label = _keypoint_clicks(results, image.size)
            if not clicks:
                raise RequestError("context.result: no keypointlabels click")
            if not any(c.is_positive for c in clicks):
                raise RequestError("context.result: no positive click")
            session = interactor.session_for(f"ls:{task.get('id')}:", image, clicks)
            res = interactor.predict_unordered(session, clicks)
            mask = res.prob > threshold_value(params.get("threshold"))
            h, w = mask.shape
            score = float(res.prob[mask].mean()) if mask.any() else 0.0
            brush = label if (label is not None and (not labels or label in labels)) else (labels[0] if labels else "Object")
            out.append({
                "result": [{
                    "from_name": from_name, "to_name": to_name, "type": "brushlabels",
                    "original_width": int(w), "original_height": int(h), "image_rotation": 0,
                    "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [brush]},
                    "score": score, "readonly": False,
                }],
                "score": score, "model_version": model_version,
            })  # fmt: skip
        return {"results": out, "model_version": model_version}

    return app
