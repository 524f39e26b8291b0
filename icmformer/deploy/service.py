"""Annotation sessions for the HTTP interactor, independent of the web framework.

An :class:`Interactor` holds one model (a PyTorch model or an :class:`~icmformer.deploy.onnx_backend.OnnxBackend`)
behind the shared zoom-in + flip protocol core (:class:`~icmformer.evaluation.core.ZoomFlipCore`),
and two bounded least-recently-used stores:

- **images**, keyed by the SHA-256 of the uploaded bytes: the decoded image and its
  :class:`~icmformer.evaluation.core.ImageEntry` (the encodings of its zoom-in crops), so the next
  click on the same image skips both decoding and the image encoder;
- **sessions**: one object being annotated: its image, its clicks in order and the protocol state
  (previous probability map and ROI) after each of the last ``history`` clicks.

A request gives the clicks of an object (CVAT and Label Studio send all of them at every click,
CVAT as separate positive and negative lists). The session keeps the order it has seen; the
request's clicks that the session already holds keep that order, new ones follow (positives, then
negatives, each in request order). The longest common prefix with the session's clicks is reused
(its stored state), the rest is predicted click by click. So a sequence of requests that each add
a click gives exactly :class:`~icmformer.evaluation.predictor.Predictor`'s maps for the same clicks,
and any other request (an undo, a removed click, another user's clicks on the same image) is a
replay of its click order from the nearest stored state: the answer depends only on the click
order, never on what the session saw before.

Memory is bounded by ``max_images + max_sessions`` images (each ``H x W x 3`` float32 plus up to
``crops_per_image`` crop encodings) and ``max_sessions x history`` probability maps (``H x W``
float32), with ``H x W`` at most ``max_pixels``.

Bad input raises :class:`RequestError` (a ``ValueError`` with an HTTP status and a one-line reason).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from icmformer.evaluation.clicker import Click
from icmformer.evaluation.core import ClickState, ImageEntry, ZoomFlipCore
from icmformer.evaluation.protocol import PRED_THRESHOLD

DEFAULT_SERVER_MAX_PIXELS = 16_000_000


class RequestError(ValueError):
    """Bad request input: ``status`` (4xx) and a one-line message."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = int(status)


# ------------------------------------------------------------------------------ input parsing
def decode_base64(text: object, what: str = "image") -> bytes:
    """Bytes of a base64 string (a ``data:...;base64,`` prefix is allowed)."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError(f"{what}: expected a base64-encoded image string")
    text = text.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise RequestError(f"{what}: a data URI must be base64 (data:image/...;base64,...)")
    text = "".join(text.split())
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what}: not valid base64") from None
    if not data:
        raise RequestError(f"{what}: empty after base64 decoding")
    return data


def decode_image_bytes(data: bytes, max_pixels: int | None, what: str = "image") -> np.ndarray:
    """``H x W x 3`` uint8 RGB from encoded bytes, refusing images above ``max_pixels`` before
    decoding (the package's one image reader, :func:`icmformer.data.imageio.decode_image`)."""
    from icmformer.data.imageio import ImageTooLargeError, decode_image

    try:
        return decode_image(data, what, max_pixels)
    except ImageTooLargeError as exc:
        raise RequestError(str(exc).splitlines()[0], status=413) from None
    except ValueError as exc:
        raise RequestError(str(exc).splitlines()[0]) from None


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{what}: expected a number, got {value!r}"[:200])
    v = float(value)
    if not math.isfinite(v):
        raise RequestError(f"{what}: must be a finite number, got {value!r}")
    return v


def pixel_click(x: object, y: object, positive: bool, size: tuple[int, int], what: str, index: int = 0) -> Click:
    """A :class:`Click` at pixel ``(x, y)`` (column, row; fractions to the nearest pixel), checked
    to lie inside an image of ``size = (H, W)``."""
    h, w = size
    xf, yf = _number(x, f"{what} x"), _number(y, f"{what} y")
    xi, yi = int(math.floor(xf + 0.5)), int(math.floor(yf + 0.5))
    if not (0 <= xi < w and 0 <= yi < h):
        raise RequestError(f"{what} (x={x}, y={y}) lies outside the {w}x{h} (WxH) image; need 0 <= x <= {w - 1}, 0 <= y <= {h - 1}")
    return Click(bool(positive), (yi, xi), index)


def point_list(points: object, positive: bool, size: tuple[int, int], what: str) -> list[Click]:
    """Clicks from a CVAT-style ``[[x, y], ...]`` list."""
    if points is None:
        return []
    if not isinstance(points, (list, tuple)):
        raise RequestError(f"{what}: expected a list of [x, y] pairs")
    out = []
    for i, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise RequestError(f"{what}[{i}]: expected [x, y], got {p!r}"[:200])
        out.append(pixel_click(p[0], p[1], positive, size, f"{what}[{i}]", i))
    return out


def threshold_value(value: object) -> float:
    if value is None:
        return PRED_THRESHOLD
    t = _number(value, "threshold")
    if not 0.0 <= t < 1.0:
        raise RequestError(f"threshold must be in [0, 1), got {value!r}")
    return t


def mask_polygon(mask: np.ndarray) -> list[list[int]]:
    """The outline of the largest connected part of ``mask`` as ``[[x, y], ...]`` pixel corners
    (OpenCV's external contour); ``[]`` for an empty mask."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    best = max(contours, key=cv2.contourArea)
    return best.reshape(-1, 2).astype(int).tolist()


# ------------------------------------------------------------------------------ sessions
@dataclass
class ImageRecord:
    key: str
    entry: ImageEntry

    @property
    def size(self) -> tuple[int, int]:
        return self.entry.size


@dataclass
class Session:
    id: str
    image: ImageRecord
    clicks: list[Click] = field(default_factory=list)
    # states[k]: the protocol state after the first k clicks (None where dropped for memory)
    states: list[ClickState | None] = field(default_factory=lambda: [ClickState()])
    prob: np.ndarray | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass
class Result:
    session: str
    prob: np.ndarray  # H x W float32
    clicks: list[Click]
    encoded: int  # image-encoder passes this request needed
    predicted: int  # clicks run through the decoder this request
    seconds: float


class Interactor:
    """The model, the image cache and the sessions of one server process (thread-safe).

    Args:
        model: an ICMFormer model or a :class:`~icmformer.evaluation.core.ModelBackend` (e.g. ONNX).
        device, zoom_in, flip, target_size: the protocol options (as :class:`Predictor`).
        max_images: decoded images (with their crop encodings) kept, least recently used first out.
        max_sessions: sessions kept (an evicted session is then an unknown session).
        history: protocol states kept per session (older clicks are replayed when needed).
        crops_per_image: crop encodings kept per image.
        max_pixels: images above this many pixels are refused before decoding (413).
    """

    def __init__(self, model, device=None, zoom_in: bool = True, flip: bool = True, target_size: int | None = None,
                 max_images: int = 8, max_sessions: int = 64, history: int = 4, crops_per_image: int = 4,
                 max_pixels: int | None = DEFAULT_SERVER_MAX_PIXELS) -> None:  # fmt: skip
        for name, v in (("max_images", max_images), ("max_sessions", max_sessions), ("history", history), ("crops_per_image", crops_per_image)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.core = ZoomFlipCore(model, device, zoom_in=zoom_in, flip=flip, target_size=target_size, cache_size=crops_per_image)
        self.max_images = int(max_images)
        self.max_sessions = int(max_sessions)
        self.history = int(history)
        self.max_pixels = max_pixels
        self._images: OrderedDict[str, ImageRecord] = OrderedDict()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._store_lock = threading.Lock()  # the two stores
        self._model_lock = threading.Lock()  # one model call at a time (the model uses every core)
        self.stats = {"requests": 0, "image_decodes": 0, "image_cache_hits": 0, "encodes": 0, "decoder_clicks": 0}

    # -------------------------------------------------------------- images
    def image(self, data: bytes) -> ImageRecord:
        """The cached record of an encoded image (decoded and added if new)."""
        key = hashlib.sha256(data).hexdigest()
        with self._store_lock:
            rec = self._images.get(key)
            if rec is not None:
                self._images.move_to_end(key)
                self.stats["image_cache_hits"] += 1
                return rec
        pixels = decode_image_bytes(data, self.max_pixels)
        rec = ImageRecord(key, self.core.add_image(pixels))
        with self._store_lock:
            self.stats["image_decodes"] += 1
            self._images[key] = self._images.get(key, rec)
            self._images.move_to_end(key)
            while len(self._images) > self.max_images:
                self._images.popitem(last=False)
            return self._images[key]

    def image_b64(self, text: object, what: str = "image") -> ImageRecord:
        return self.image(decode_base64(text, what))

    # -------------------------------------------------------------- sessions
    def new_session(self, image: ImageRecord, session_id: str | None = None) -> Session:
        sid = session_id or secrets.token_hex(8)
        s = Session(sid, image)
        with self._store_lock:
            self._sessions[sid] = s
            self._sessions.move_to_end(sid)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return s

    def session(self, session_id: object) -> Session:
        """An existing session (404 :class:`RequestError` if unknown or evicted)."""
        if not isinstance(session_id, str) or not session_id:
            raise RequestError("session: expected a session id string")
        with self._store_lock:
            s = self._sessions.get(session_id)
            if s is None:
                raise RequestError(f"unknown session {session_id[:64]!r} (never created, deleted or expired)", status=404)
            self._sessions.move_to_end(session_id)
            return s

    def session_for(self, prefix: str, image: ImageRecord, clicks: Sequence[Click]) -> Session:
        """An implicit session (a client that sends no session id) for ``clicks`` on ``image``:
        of the sessions named ``prefix...`` on this image, the one whose clicks continue furthest
        into ``clicks`` (so two annotators of one image keep their own histories), else a new one."""
        best, best_n = None, 0
        with self._store_lock:
            for s in self._sessions.values():
                if s.id.startswith(prefix) and s.image.key == image.key:
                    n = _contained_prefix(s.clicks, clicks)
                    if n > best_n:
                        best, best_n = s, n
            if best is not None:
                self._sessions.move_to_end(best.id)
                return best
        return self.new_session(image, prefix + secrets.token_hex(6))

    def drop_session(self, session_id: str) -> None:
        self.session(session_id)
        with self._store_lock:
            self._sessions.pop(session_id, None)

    def memory_items(self) -> dict:
        """How many images, sessions and stored probability maps are held (for tests / /health)."""
        with self._store_lock:
            sessions = list(self._sessions.values())
            images = {r.key for r in self._images.values()} | {s.image.key for s in sessions}
            maps = sum(1 for s in sessions for st in s.states if st is not None and st.prev_probs is not None)
            return {"images_cached": len(self._images), "images_held": len(images), "sessions": len(sessions), "prob_maps": maps}

    # -------------------------------------------------------------- clicks
    @staticmethod
    def order_clicks(known: Sequence[Click], clicks: Sequence[Click]) -> list[Click]:
        """``clicks`` (an unordered request) in the session's order: the known ones first, in the
        order the session saw them, then the new ones in request order."""
        remaining = [(c.is_positive, tuple(c.coords)) for c in clicks]
        ordered = []
        for c in known:
            k = (c.is_positive, tuple(c.coords))
            if k in remaining:
                remaining.remove(k)
                ordered.append(k)
        ordered += remaining
        return [Click(p, yx, i) for i, (p, yx) in enumerate(ordered)]

    def predict_unordered(self, session: Session, clicks: Sequence[Click]) -> Result:
        """:meth:`predict` for a request that gives its clicks without their order (CVAT's two
        lists, Label Studio's keypoints): ordered by :meth:`order_clicks` against the session."""
        with session.lock:
            return self.predict(session, self.order_clicks(session.clicks, clicks))

    def predict(self, session: Session, clicks: Sequence[Click]) -> Result:
        """The probability map for ``clicks`` in this order (newest last), reusing the session's
        longest matching prefix; the session then holds these clicks."""
        clicks = [Click(c.is_positive, (int(c.coords[0]), int(c.coords[1])), i) for i, c in enumerate(clicks)]
        if not clicks:
            raise RequestError("no clicks: give at least one positive click")
        if not any(c.is_positive for c in clicks):
            raise RequestError("no positive click: the first object click must be positive")
        h, w = session.image.size
        for c in clicks:
            if not (0 <= c.coords[0] < h and 0 <= c.coords[1] < w):
                raise RequestError(f"click (x={c.coords[1]}, y={c.coords[0]}) lies outside the {w}x{h} (WxH) image")
        t0 = time.perf_counter()
        with session.lock:
            k = 0
            while k < min(len(clicks), len(session.clicks)) and _same(clicks[k], session.clicks[k]):
                k += 1
            while k > 0 and (k >= len(session.states) or session.states[k] is None):
                k -= 1
            states = session.states[: k + 1]
            state = states[k] if states[k] is not None else ClickState()
            prob = session.prob if k == len(clicks) and k == len(session.clicks) else None
            entry = session.image.entry
            before = entry.cache.calls
            for j in range(k, len(clicks)):
                with self._model_lock:
                    step = self.core.prepare(entry, clicks[: j + 1], state)
                    ((prob, state),) = self.core.run([step])
                states.append(state)
            if prob is None:  # a prefix of the session's clicks: the map stored with its state
                prob = _prob_of(state, (h, w))
            for i in range(1, max(1, len(states) - self.history)):
                states[i] = None  # keep the last `history` states (and the empty start state)
            session.clicks, session.states, session.prob = list(clicks), states, prob
            encoded = entry.cache.calls - before
        with self._store_lock:
            self.stats["requests"] += 1
            self.stats["encodes"] += encoded
            self.stats["decoder_clicks"] += len(clicks) - k
        return Result(session.id, prob, list(clicks), encoded, len(clicks) - k, time.perf_counter() - t0)

    def undo(self, session: Session) -> Result:
        """Remove the session's last click (replaying when its state was dropped)."""
        with session.lock:
            clicks = list(session.clicks[:-1])
        if not clicks:
            with session.lock:
                session.clicks, session.states, session.prob = [], [ClickState()], None
            h, w = session.image.size
            return Result(session.id, np.zeros((h, w), np.float32), [], 0, 0, 0.0)
        return self.predict(session, clicks)


def _contained_prefix(known: Sequence[Click], clicks: Sequence[Click]) -> int:
    """How many leading clicks of ``known`` the multiset ``clicks`` contains."""
    remaining = [(c.is_positive, tuple(c.coords)) for c in clicks]
    n = 0
    for c in known:
        k = (c.is_positive, tuple(c.coords))
        if k not in remaining:
            break
        remaining.remove(k)
        n += 1
    return n


def _same(a: Click, b: Click) -> bool:
    return a.is_positive == b.is_positive and tuple(a.coords) == tuple(b.coords)


def _prob_of(state: ClickState, size: tuple[int, int]) -> np.ndarray:
    if state.prev_probs is None:
        return np.zeros(size, np.float32)
    return state.prev_probs[0, 0].cpu().numpy().astype(np.float32, copy=False)
