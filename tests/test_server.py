"""``icmformer serve``: the real server on 127.0.0.1, spoken to over HTTP.

The model is a tiny random ViT (64 px input) saved as a checkpoint; its last layer is scaled up so
that probabilities sit far from the 0.49 threshold and a mask comparison is a real comparison.
Expected masks come from the library's ``Predictor`` with the same weights, in this process.
"""
from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from icmformer.deploy.rle import decode_mask
from icmformer.evaluation.predictor import Predictor
from icmformer.models.checkpoint import save_checkpoint
from icmformer.models.registry import create_model, tiny_overrides
from serving import noise_image, png_b64, running_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

LS_CONFIG = (
    "<View><Image name='img' value='$image'/>"
    "<BrushLabels name='brush' toName='img'><Label value='Cat'/><Label value='Dog'/></BrushLabels>"
    "<KeyPointLabels name='kp' toName='img' smart='true'><Label value='Dog'/></KeyPointLabels></View>"
)


def tiny_checkpoint(path):
    torch.manual_seed(3)
    model = create_model("icmformer_vit_base_448", **tiny_overrides("icmformer_vit_base_448")).eval()
    with torch.no_grad():  # rescale the last layer: logits centred on 0 with a spread of about +-5
        image = torch.from_numpy(noise_image(0, 64, 64)).permute(2, 0, 1)[None].float() / 255
        logits = model(image, torch.tensor([[[32.0, 32.0, 1.0]]]))
        lo, mid, hi = torch.quantile(logits.flatten(), torch.tensor([0.25, 0.5, 0.75])).tolist()
        scale = 10.0 / max(hi - lo, 1e-6)
        bias = model.head.conv_seg.bias
        bias.copy_(scale * (bias - mid))
        model.head.conv_seg.weight.mul_(scale)
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.safetensors")


@pytest.fixture(scope="module")
def server(checkpoint):
    with running_server("--checkpoint", str(checkpoint), "--max-image-pixels", "200000") as (url, proc):
        yield url, proc


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=120) as c:
        yield c


def expected_masks(checkpoint, image, clicks):
    """Masks after each click, ``clicks`` = [(x, y, positive)], from the library's Predictor."""
    from icmformer.models.checkpoint import load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the server runs with --threads 1
    try:
        p = Predictor(load_checkpoint(checkpoint))
        p.set_image(image)
        out = []
        for x, y, positive in clicks:
            mask, prob = p.add_click(y, x, positive)
            out.append(mask.copy())
        return out
    finally:
        torch.set_num_threads(threads)


def cvat_body(b64, clicks, **extra):
    return {"image": b64, "pos_points": [[x, y] for x, y, p in clicks if p],
            "neg_points": [[x, y] for x, y, p in clicks if not p], **extra}  # fmt: skip


def as_mask(payload):
    return np.asarray(payload["mask"], dtype=np.uint8) == 255


def test_cvat_clicks_equal_the_library_predictor_and_reuse_the_encoding(server, client, checkpoint):
    url, _ = server
    image = noise_image(1)
    b64 = png_b64(image)
    clicks = [(60, 40, True), (20, 80, False), (70, 50, True), (100, 20, False)]
    expected = expected_masks(checkpoint, image, clicks)
    assert any(m.any() for m in expected) and not all(m.all() for m in expected)
    for k in range(1, len(clicks) + 1):
        r = client.post(url + "/cvat", json=cvat_body(b64, clicks[:k], threshold=0.49))
        assert r.status_code == 200, r.text
        body = r.json()
        assert np.array_equal(as_mask(body), expected[k - 1]), f"click {k}"
        assert body["width"] == 128 and body["height"] == 96
        assert [(c["x"], c["y"], c["positive"]) for c in body["clicks"]] == clicks[:k]
        # one new click per request: the session's previous map is reused, the crop encoded once
        assert body["predicted_clicks"] == 1
        if k == 1:
            assert body["encoded"] >= 1
        if body["points"]:
            pts = np.asarray(body["points"])
            assert pts[:, 0].max() < 128 and pts[:, 1].max() < 96
    # an undo (CVAT removes the last point) answers the stored map without running the model
    r = client.post(url + "/cvat", json=cvat_body(b64, clicks[:3]))
    assert r.status_code == 200 and np.array_equal(as_mask(r.json()), expected[2])
    assert r.json()["predicted_clicks"] == 0 and r.json()["encoded"] == 0


def test_explicit_sessions(server, client, checkpoint):
    url, _ = server
    image = noise_image(2)
    clicks = [(30, 30, True), (90, 70, False), (64, 48, True)]
    expected = expected_masks(checkpoint, image, clicks)
    r = client.post(url + "/sessions", json={"image": png_b64(image)})
    assert r.status_code == 200
    sid = r.json()["session"]
    assert (r.json()["width"], r.json()["height"]) == (128, 96)
    for k in range(1, 4):
        body = {"clicks": [{"x": x, "y": y, "positive": p} for x, y, p in clicks[:k]]}
        r = client.post(f"{url}/sessions/{sid}/clicks", json=body)
        assert r.status_code == 200, r.text
        assert np.array_equal(as_mask(r.json()), expected[k - 1])
    r = client.post(f"{url}/sessions/{sid}/undo")
    assert r.status_code == 200 and np.array_equal(as_mask(r.json()), expected[1])
    assert client.delete(f"{url}/sessions/{sid}").status_code == 200
    r = client.post(f"{url}/sessions/{sid}/clicks", json={"clicks": [{"x": 1, "y": 1, "positive": True}]})
    assert r.status_code == 404 and "unknown session" in r.json()["error"]


def test_label_studio_predict_returns_brush_rle_of_the_same_mask(server, client, checkpoint):
    url, _ = server
    image = noise_image(3)
    # keypoints in percent of the image; (x, y) = (50 %, 50 %) is pixel (64, 48)
    ctx = [
        {"type": "keypointlabels", "original_width": 128, "original_height": 96, "is_positive": True,
         "value": {"x": 50.0, "y": 50.0, "width": 1, "keypointlabels": ["Dog"]}, "from_name": "kp", "to_name": "img"},
        {"type": "keypointlabels", "original_width": 128, "original_height": 96, "is_positive": False,
         "value": {"x": 12.5, "y": 25.0, "keypointlabels": ["Dog"]}, "from_name": "kp", "to_name": "img"},
    ]  # fmt: skip
    expected = expected_masks(checkpoint, image, [(64, 48, True), (16, 24, False)])
    body = {"tasks": [{"id": 7, "data": {"image": "data:image/png;base64," + png_b64(image)}}],
            "label_config": LS_CONFIG, "params": {"context": {"result": ctx}}}  # fmt: skip
    r = client.post(url + "/predict", json=body)
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"][0]["result"]
    assert res["type"] == "brushlabels" and res["from_name"] == "brush" and res["to_name"] == "img"
    assert res["value"]["format"] == "rle" and res["value"]["brushlabels"] == ["Dog"]
    assert (res["original_width"], res["original_height"]) == (128, 96)
    assert np.array_equal(decode_mask(res["value"]["rle"], 96, 128), expected[1])
    # a pre-annotation call without clicks gets an empty result, not an error
    r = client.post(url + "/predict", json={"tasks": [{"id": 7, "data": {"image": "x"}}]})
    assert r.status_code == 200 and r.json()["results"][0]["result"] == []
    assert client.post(url + "/setup", json={}).json()["model_version"].startswith("icmformer")


def test_bad_input_gets_a_4xx_with_one_line_and_the_server_lives(server, client):
    url, proc = server
    b64 = png_b64(noise_image(4))
    big = png_b64(np.zeros((500, 500, 3), np.uint8))  # 250000 px > --max-image-pixels 200000
    cases = [
        ({"image": "%%%not base64", "pos_points": [[1, 1]]}, 422, "base64"),
        ({"image": png_b64(noise_image(4))[:40], "pos_points": [[1, 1]]}, 422, "decode"),
        ({"image": "aGVsbG8gd29ybGQ=", "pos_points": [[1, 1]]}, 422, "not an image"),
        ({"image": big, "pos_points": [[1, 1]]}, 413, "pixels"),
        ({"image": b64, "pos_points": [[500, 1]]}, 422, "outside"),
        ({"image": b64, "pos_points": [[-1, 1]]}, 422, "outside"),
        ({"image": b64, "pos_points": [[float("nan"), 1]]}, 422, "finite"),
        ({"image": b64, "pos_points": [["a", 1]]}, 422, "number"),
        ({"image": b64, "pos_points": [], "neg_points": [[3, 3]]}, 422, "positive"),
        ({"image": b64, "pos_points": [[1, 1]], "threshold": 2}, 422, "threshold"),
        ({"image": b64, "pos_points": [[1, 1]], "session": "no-such-session"}, 404, "unknown session"),
        ({"pos_points": [[1, 1]]}, 422, "image"),
        ([1, 2, 3], 422, "JSON object"),
    ]
    for body, status, words in cases:
        r = client.post(url + "/cvat", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == status, (body if len(str(body)) < 200 else words, r.text)
        err = r.json()["error"]
        assert words in err and "\n" not in err, err
    r = client.post(url + "/cvat", content=b"{broken", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    ls = {"tasks": [{"id": 1, "data": {"image": b64}}],
          "params": {"context": {"result": [{"type": "keypointlabels", "value": {"x": 101, "y": 5}}]}}}  # fmt: skip
    r = client.post(url + "/predict", json=ls)
    assert r.status_code == 422 and "outside" in r.json()["error"]
    ls["tasks"][0]["data"]["image"] = "https://example.org/a.png"
    ls["params"]["context"]["result"][0]["value"]["x"] = 5
    r = client.post(url + "/predict", json=ls)
    assert r.status_code == 422 and "--label-studio-url" in r.json()["error"]
    assert client.get(url + "/health").json()["status"] == "UP"
    assert proc.poll() is None


def test_load_many_threads_no_errors_no_mixing(server, client, checkpoint):
    """200 requests from 8 threads over 4 images: explicit sessions and CVAT's implicit per-image
    sessions (two threads share each image's, with different clicks); every answer must equal the
    library's mask for that request's own clicks."""
    url, _ = server
    images = [noise_image(10 + i) for i in range(4)]
    b64s = [png_b64(im) for im in images]
    rng = np.random.default_rng(0)
    plans = []
    for t in range(8):
        seq = [(int(rng.integers(10, 118)), int(rng.integers(10, 86)), k % 3 != 1) for k in range(4)]
        plans.append((t % 4, seq))
    expected = {t: expected_masks(checkpoint, images[img], seq) for t, (img, seq) in enumerate(plans)}

    def worker(t):
        img, seq = plans[t]
        lat, errors, mixed = [], 0, 0
        with httpx.Client(timeout=300) as c:
            for rep in range(5):  # 5 x (1 create or warm + 4 clicks) = 25 requests per thread
                if t % 2 == 0:  # explicit session
                    t0 = time.perf_counter()
                    r = c.post(url + "/sessions", json={"image": b64s[img]})
                    lat.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors += 1
                        continue
                    sid = r.json()["session"]
                for k in range(1, 5):
                    t0 = time.perf_counter()
                    if t % 2 == 0:
                        r = c.post(f"{url}/sessions/{sid}/clicks", json={"clicks": [{"x": x, "y": y, "positive": p} for x, y, p in seq[:k]]})
                    else:
                        r = c.post(url + "/cvat", json=cvat_body(b64s[img], seq[:k]))
                    lat.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors += 1
                    elif not np.array_equal(as_mask(r.json()), expected[t][k - 1]):
                        mixed += 1
                        print("MIX", t, rep, k, r.json()["clicks"], seq[:k])
                if t % 2 == 1:  # keep 25 requests per thread: one health call per round
                    t0 = time.perf_counter()
                    errors += client_health_failed(c, url)
                    lat.append(time.perf_counter() - t0)
        return lat, errors, mixed

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(worker, range(8)))
    wall = time.perf_counter() - t0
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    mixed = sum(r[2] for r in results)
    q = np.quantile(lat, [0.5, 0.9, 0.99])
    print(f"\nload test: {len(lat)} requests, 8 threads, {errors} errors, {mixed} mixed results, {wall:.1f} s wall, "
          f"latency p50 {1000 * q[0]:.0f} ms, p90 {1000 * q[1]:.0f} ms, p99 {1000 * q[2]:.0f} ms, max {1000 * lat[-1]:.0f} ms, "
          f"mean {1000 * statistics.mean(lat):.0f} ms")  # fmt: skip
    assert len(lat) == 200
    assert errors == 0 and mixed == 0


def client_health_failed(c, url) -> int:
    r = c.get(url + "/health")
    return int(r.status_code != 200 or r.json().get("status") != "UP")


def test_memory_stays_bounded_over_50_images(checkpoint, client):
    psutil = pytest.importorskip("psutil")
    args = ("--checkpoint", str(checkpoint), "--max-images", "3", "--max-sessions", "4", "--history", "2")
    with running_server(*args) as (url, proc):
        rss = []
        for i in range(50):
            image = noise_image(100 + i, 480, 640)
            r = client.post(url + "/cvat", json=cvat_body(png_b64(image), [(320, 240, True)]))
            assert r.status_code == 200, r.text
            if i in (9, 49):
                rss.append(psutil.Process(proc.pid).memory_info().rss)
        h = client.get(url + "/health").json()
        assert h["images_cached"] <= 3 and h["sessions"] <= 4 and h["images_held"] <= 3 + 4
        assert h["prob_maps"] <= 4 * 2
        assert h["stats"]["image_decodes"] == 50
        # 40 more 640x480 images would hold > 40 x 3.7 MB float images + maps if nothing were freed
        grew_mb = (rss[1] - rss[0]) / 2**20
        print(f"\nserver RSS after 10 images {rss[0] / 2**20:.0f} MB, after 50 {rss[1] / 2**20:.0f} MB (+{grew_mb:.0f} MB)")
        assert grew_mb < 60


class _FakeLabelStudio:
    """A local HTTP server standing in for Label Studio's file store: ``/data/upload/...`` answers
    with the registered bytes when the request carries ``Authorization: Token <token>``."""

    def __init__(self, files: dict, token: str) -> None:
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append((self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Token {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                if body is not None:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_label_studio_image_urls_are_fetched_from_label_studio_only(checkpoint, client, monkeypatch):
    import base64

    image = noise_image(5)
    ls = _FakeLabelStudio({"/data/upload/3/cat.png": base64.b64decode(png_b64(image))}, token="s3cret")
    ctx = [{"type": "keypointlabels", "is_positive": True, "value": {"x": 50.0, "y": 50.0, "keypointlabels": ["Cat"]}}]
    expected = expected_masks(checkpoint, image, [(64, 48, True)])[0]

    def body(src):
        return {"tasks": [{"id": 1, "data": {"image": src}}], "label_config": LS_CONFIG,
                "params": {"context": {"result": ctx}}}  # fmt: skip

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "s3cret")  # the key travels by environment, not argv
    try:
        with running_server("--checkpoint", str(checkpoint), "--label-studio-url", ls.url + "/") as (url, proc):
            for src in ("/data/upload/3/cat.png", ls.url + "/data/upload/3/cat.png"):  # relative and absolute
                r = client.post(url + "/predict", json=body(src))
                assert r.status_code == 200, r.text
                res = r.json()["results"][0]["result"][0]
                assert np.array_equal(decode_mask(res["value"]["rle"], 96, 128), expected)
            assert ls.seen[-1] == ("/data/upload/3/cat.png", "Token s3cret")
            n = len(ls.seen)
            cases = [
                ("/data/upload/3/missing.png", 422, "HTTP 404"),
                ("https://example.org/cat.png", 422, "fetches images from Label Studio only"),
                ("http://127.0.0.1:1/data/upload/3/cat.png", 422, "not on --label-studio-url"),
            ]
            for src, status, words in cases:
                r = client.post(url + "/predict", json=body(src))
                assert r.status_code == status and words in r.json()["error"] and "\n" not in r.json()["error"], r.text
            assert len(ls.seen) == n + 1  # only the Label Studio URL was fetched, no foreign host
            assert proc.poll() is None
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong")
        with running_server("--checkpoint", str(checkpoint), "--label-studio-url", ls.url) as (url, _):
            r = client.post(url + "/predict", json=body("/data/upload/3/cat.png"))
            assert r.status_code == 422 and "HTTP 401" in r.json()["error"]
    finally:
        ls.close()


def test_label_studio_url_must_be_http():
    from icmformer.deploy.server import LabelStudioImages

    with pytest.raises(ValueError, match="--label-studio-url must be an http"):
        LabelStudioImages("ftp://host/x")
    with pytest.raises(Exception, match="start the server with --label-studio-url"):
        LabelStudioImages(None).fetch("/data/upload/1/a.png")
