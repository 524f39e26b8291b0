"""The annotation notebook in a real browser: JupyterLab + headless Chromium (Playwright).

Starts a token-less JupyterLab on a free port with a temporary root holding a copy of
``notebooks/annotate.ipynb`` (parameters injected: a tiny checkpoint, an output folder) and the
checkpoint, opens the notebook in headless Chromium (the system ``/usr/bin/chromium``, a new empty
profile), runs all cells, clicks on the image in the ipympl canvas (a left click, then a right
click), checks that the status line and the canvas change, presses Export, checks the files, and
saves a screenshot to ``results/browser/annotate.png``.

Needs ``apt-get install chromium`` (Debian's package) and the Python package playwright; skipped
with the reason otherwise. Run it with ``pytest -m browser tests/test_browser.py``.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.serving import stop_process

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "results" / "browser" / "annotate.png"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
NAME = "icmformer_vit_tiny_224"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system Chromium at /usr/bin/chromium (apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(tmp_path):
    """A running JupyterLab serving ``tmp_path/root``; yields ``(url, root)``."""
    pytest.importorskip("playwright.sync_api", reason="needs the Python package playwright (pip install playwright; no browser download)")
    import nbformat
    import torch

    from icmformer.models.checkpoint import save_checkpoint
    from icmformer.models.registry import create_model, tiny_overrides

    root = tmp_path / "root"
    root.mkdir()
    torch.manual_seed(0)
    save_checkpoint(create_model(NAME, **tiny_overrides(NAME)), root / "tiny.safetensors")
    nb = nbformat.read(REPO / "notebooks" / "annotate.ipynb", as_version=4)
    (k,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    injected = 'checkpoint = "tiny.safetensors"\noutput_dir = "exported"'
    nb.cells.insert(k + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    nb.metadata.pop("jupytext", None)  # a plain notebook in the temporary root (no paired script)
    nbformat.write(nb, root / "annotate.ipynb")

    port = free_port()
    env = dict(os.environ)
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")]:  # fmt: skip
        env[var] = str(tmp_path / sub)
    # no "get notified about Jupyter news?" toast over the screenshot
    notification = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    log = tmp_path / "jupyterlab.log"
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        f"--ServerApp.root_dir={root}", "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/status", proc, log)
        yield url, root
    finally:
        stop_process(proc)


def canvas_pixels(locator) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=np.int16)


def test_annotate_notebook_in_chromium(lab, tmp_path):
    from playwright import sync_api
    url, root = lab
    t0 = time.monotonic()
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1280},
        )  # fmt: skip
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}/lab/tree/annotate.ipynb")
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }",
                timeout=90_000,
            )  # fmt: skip
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            status = page.locator(".icmformer-status")
            status.wait_for(state="visible", timeout=90_000)
            sync_api.expect(status).to_contain_text("0 clicks", timeout=30_000)
            canvas = page.locator(".jupyter-matplotlib-canvas-div canvas").last
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100
            before = canvas_pixels(canvas)

            # the demo image is 240x320 and fills the canvas: its disc is centred at
            # (y, x) = (120, 122), i.e. 50% down and 38% across
            page.mouse.click(box["x"] + 0.38 * box["width"], box["y"] + 0.5 * box["height"])
            sync_api.expect(status).to_contain_text("1 click (1+ 0-)", timeout=30_000)
            text = status.inner_text()
            area = int(text.split("mask ")[1].split(" px")[0])
            assert area > 0, text
            assert "last click" in text and "image encodings" in text
            page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + 0.9 * box["height"], button="right")
            sync_api.expect(status).to_contain_text("2 clicks (1+ 1-)", timeout=30_000)
            page.wait_for_timeout(1000)  # let the canvas repaint
            after = canvas_pixels(canvas)
            assert before.shape == after.shape
            changed = np.abs(after - before).sum(axis=2) > 30
            assert changed.mean() > 0.01, f"the canvas hardly changed ({changed.mean():.4f} of its pixels)"

            page.get_by_role("button", name="Export").click()
            message = page.locator(".icmformer-message")
            sync_api.expect(message).to_contain_text("exported 1 object(s)", timeout=30_000)
            message.scroll_into_view_if_needed()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            context.close()
    exported = root / "exported"
    assert sorted(p.name for p in exported.iterdir()) == ["demo_clicks.json", "demo_coco.json", "demo_object_1.png"]
    doc = json.loads((exported / "demo_clicks.json").read_text())
    (clicks,) = [o["clicks"] for o in doc["objects"]]
    assert [c[2] for c in clicks] == [True, False]
    y, x = clicks[0][:2]
    assert abs(y - 120) <= 12 and abs(x - 122) <= 12, clicks  # where the browser clicked
    print(f"browser test: {time.monotonic() - t0:.1f} s in Chromium; screenshot {SCREENSHOT}")
