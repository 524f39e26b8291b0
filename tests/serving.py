"""Helpers for the HTTP server tests: start ``icmformer serve`` as a real process on 127.0.0.1."""
from __future__ import annotations

import base64
import contextlib
import io
import os
import queue
import subprocess
import sys
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def noise_image(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth random image (so masks are not pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    blob = ((yy - cy) ** 2 / (0.2 * h) ** 2 + (xx - cx) ** 2 / (0.25 * w) ** 2) < 1
    img = rng.integers(0, 60, (h, w, 3)) + np.where(blob[..., None], rng.integers(120, 200, 3), rng.integers(20, 90, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def running_server(*args: str, timeout: float = 120.0):
    """``icmformer serve ARGS --port 0`` in a subprocess; yields ``(base_url, process)``; stops it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "icmformer.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--threads", "1", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            if proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"server exited with {proc.returncode}: {''.join(err)[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in {timeout} s: {''.join(err)[-2000:]}")
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("serving on "):
                url = line.split()[2]
        yield url, proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a test's server process; kill it if it has not exited after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
