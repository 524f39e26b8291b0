"""``icmformer.interactive``: the annotation session, export / resume, click parsing, attention
helpers, overlays and the annotation widget's event handling (no browser)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from icmformer.evaluation.clicker import Click
from icmformer.evaluation.predictor import Predictor
from icmformer.interactive import (
    AnnotationSession,
    UntrainedModelWarning,
    click_token_norm,
    click_token_pca,
    demo_image,
    load_model,
    normalize_map,
    overlay_heatmap,
    overlay_masks,
    parse_click,
    parse_objects,
    query_maps,
    read_clicks_file,
    resolve_path,
    run_attention,
    token_index,
    upsample_map,
)
from icmformer.models.registry import create_model, tiny_overrides

NAME = "icmformer_vit_tiny_224"


@pytest.fixture(scope="module")
def model():
    # 64 px input, 4x4 token grid, windows of 2x2 tokens; cross block 1 windowed, block 2 global
    torch.manual_seed(0)
    return create_model(NAME, **tiny_overrides(NAME)).eval()


@pytest.fixture(scope="module")
def image():
    return demo_image(96, 128, seed=1)


def session_for(model, image, **kw):
    return AnnotationSession.from_model(model, image, {"name": "demo"}, **kw)


def fresh_masks(model, image, clicks, **kw):
    """Masks of a fresh predictor for one click sequence (the reference)."""
    p = Predictor(model, **kw)
    p.set_image(image)
    out = []
    for y, x, pos in clicks:
        out.append(p.add_click(y, x, pos)[0])
    return out


# ------------------------------------------------------------------------------ session
def test_add_undo_reset_next_object(model, image):
    s = session_for(model, image)
    ref = fresh_masks(model, image, [(40, 40, True), (10, 100, False)])
    m1 = s.add_click(40, 40)
    np.testing.assert_array_equal(m1, ref[0])
    m2 = s.add_click(10, 100, positive=False)
    np.testing.assert_array_equal(m2, ref[1])
    assert [c.to_list() for c in s.current.clicks] == [[40, 40, True], [10, 100, False]]
    assert len(s.current.latencies_s) == 2 and all(t > 0 for t in s.current.latencies_s)
    assert s.current.clicks[1].index == 1

    np.testing.assert_array_equal(s.undo(), ref[0])
    assert s.current.num_clicks == 1 and len(s.current.latencies_s) == 1
    assert s.undo() is None and s.current.num_clicks == 0 and s.annotated == []
    assert s.undo() is None and s.current_index == 0  # nothing to undo: no-op
    assert s.next_object() == 0 and len(s.objects) == 1  # an empty object is not finished

    s.add_click(40, 40)
    assert s.next_object() == 1 and len(s.objects) == 2
    assert s.predictor.clicks == []  # the predictor starts over for the new object
    m_obj2 = s.add_click(70, 100)
    np.testing.assert_array_equal(m_obj2, fresh_masks(model, image, [(70, 100, True)])[0])
    assert len(s.masks) == 2
    np.testing.assert_array_equal(s.masks[0], ref[0])  # object 1 kept its mask

    s.reset()
    assert s.current.num_clicks == 0 and s.current.mask is None and len(s.annotated) == 1
    # undo on the empty object 2 goes back to object 1, which continues where it was
    s.undo()
    assert s.current_index == 0 and len(s.objects) == 1 and s.current.num_clicks == 1
    m = s.add_click(10, 100, positive=False)
    np.testing.assert_array_equal(m, ref[1])
    label = s.label_map()
    assert label.dtype == np.int32 and set(np.unique(label)) <= {0, 1}
    assert "object 1 of 1" in s.summary() and "2 clicks" in s.summary()


def test_image_is_encoded_once_per_image(model, image):
    s = session_for(model, image, zoom_in=False)
    for y, x, p in [(40, 40, True), (10, 100, False), (60, 20, True)]:
        s.add_click(y, x, p)
    s.next_object()
    s.add_click(80, 110)
    s.undo()
    s.add_click(80, 111)
    assert s.encode_count == 1
    assert "image encodings 1" in s.summary()


def test_click_outside_image_is_an_error(model, image):
    s = session_for(model, image)
    with pytest.raises(ValueError, match="outside the image"):
        s.add_click(96, 5)
    assert s.current.num_clicks == 0
    with pytest.raises(ValueError, match="object 2: click .*outside"):
        s.replay([[[5, 5, True]], [[5, 500, True]]])
    assert s.annotated == []  # checked before anything is replayed


# ------------------------------------------------------------------------------ export / resume
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_export_files_are_correct_and_resume_reproduces_them(model, image, tmp_path):
    from pycocotools import mask as mask_utils

    s = session_for(model, image)
    s.replay([[[40, 40, True], [10, 100, False]], [[70, 100, True]], [[20, 20, True], [80, 20, True]]])
    assert len(s.annotated) == 3
    files = s.export(tmp_path / "out")
    assert [p.name for p in files.masks] == ["demo_object_1.png", "demo_object_2.png", "demo_object_3.png"]
    coco = json.loads(files.coco.read_text())
    assert coco["images"] == [{"id": 1, "file_name": "demo", "height": 96, "width": 128}]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3]
    for k, (png, obj) in enumerate(zip(files.masks, s.annotated)):
        saved = np.array(Image.open(png))
        assert saved.shape == (96, 128) and saved.dtype == np.uint8 and set(np.unique(saved)) <= {0, 255}
        np.testing.assert_array_equal(saved == 255, obj.mask)
        ann = coco["annotations"][k]
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode("ascii")}
        decoded = mask_utils.decode(rle)
        np.testing.assert_array_equal(decoded.astype(bool), saved == 255)
        assert ann["area"] == int(obj.mask.sum()) and ann["num_clicks"] == obj.num_clicks
        if obj.mask.any():
            ys, xs = np.nonzero(obj.mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    doc = json.loads(files.clicks.read_text())
    assert doc["format"] == "icmformer-clicks" and doc["image"]["height"] == 96 and doc["image"]["width"] == 128
    assert [o["clicks"] for o in doc["objects"]] == [[[40, 40, True], [10, 100, False]], [[70, 100, True]], [[20, 20, True], [80, 20, True]]]
    assert [o["mask_file"] for o in doc["objects"]] == [p.name for p in files.masks]
    assert doc["model"]["name"] == NAME and doc["model"]["trained"] is False
    assert doc["predictor"] == {"zoom_in": True, "flip": True, "target_size": 64}

    resumed = session_for(model, image)
    resumed.add_click(5, 5)  # forgotten on resume
    masks = resumed.load_clicks(files.clicks)
    assert len(masks) == 3 and resumed.current.num_clicks == 0 and resumed.current_index == 3
    for a, b in zip(masks, s.masks):
        np.testing.assert_array_equal(a, b)
    assert [o.clicks for o in resumed.annotated] == [o.clicks for o in s.annotated]
    # the resumed annotation continues: undo goes back into object 3
    resumed.undo()
    resumed.undo()
    assert resumed.current_index == 2 and resumed.current.num_clicks == 1


def test_reexport_replaces_own_files_but_not_others(model, image, tmp_path):
    s = session_for(model, image)
    with pytest.raises(ValueError, match="nothing to export"):
        s.export(tmp_path)
    s.replay([[[40, 40, True]], [[70, 100, True]]])
    files = s.export(tmp_path)
    s.undo()
    s.undo()  # object 2 is gone
    again = s.export(tmp_path)  # the session's own files: replaced without overwrite=True
    assert len(again.masks) == 1 and not (tmp_path / "demo_object_2.png").exists()
    assert len(json.loads(again.coco.read_text())["annotations"]) == 1

    other = session_for(model, image)
    other.add_click(20, 20)
    before = files.coco.read_bytes()
    with pytest.raises(FileExistsError, match="demo_coco.json"):
        other.export(tmp_path)
    assert files.coco.read_bytes() == before
    other.export(tmp_path, overwrite=True)
    assert files.coco.read_bytes() != before
    other.export(tmp_path, stem="second")
    assert (tmp_path / "second_object_1.png").exists()


def test_resume_checks_the_image_size(model, image, tmp_path):
    s = session_for(model, image)
    s.add_click(40, 40)
    files = s.export(tmp_path)
    small = AnnotationSession.from_model(model, demo_image(64, 64), {"name": "small"})
    with pytest.raises(ValueError, match="96x128"):
        small.load_clicks(files.clicks)
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not an icmformer click file"):
        read_clicks_file(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        read_clicks_file(tmp_path / "missing.json")
    (tmp_path / "plain.json").write_text("[[1, 2, true], [3, 4, false]]")
    assert read_clicks_file(tmp_path / "plain.json")["objects"] == [{"id": 1, "clicks": [[1, 2, True], [3, 4, False]]}]


# ------------------------------------------------------------------------------ parsing
def test_parse_click_forms():
    assert parse_click("12,34,+") == Click(True, (12, 34), 0)
    assert parse_click(" 12 , 34 , - ", 3) == Click(False, (12, 34), 3)
    assert parse_click([12, 34, 0]).is_positive is False
    assert parse_click([12.0, 34, "pos"]) == Click(True, (12, 34), 0)
    assert parse_click({"y": 1, "x": 2, "positive": True}) == Click(True, (1, 2), 0)
    for bad, msg in [("12,34", "Y,X,\\+"), ("a,34,+", "y must be a number"), ("1,2,?", "expected \\+ or -"),
                     ([1, 2], "expected"), ([True, 2, 1], "must be a number"), (["inf", 2, 1], "finite")]:  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            parse_click(bad)
    # fractions: the nearest pixel, as Predictor.add_click (issue 14: the CLI refused 1.5, the API truncated)
    assert parse_click([1.5, 2.4, True]).coords == (2, 2)


def test_parse_objects_shapes():
    assert parse_objects(None) == [] and parse_objects([]) == []
    one = parse_objects([[1, 2, True], [3, 4, False]])
    assert len(one) == 1 and [c.coords for c in one[0]] == [(1, 2), (3, 4)] and one[0][1].index == 1
    two = parse_objects([[[1, 2, True]], [[3, 4, "+"], "5,6,-"]])
    assert [len(o) for o in two] == [1, 2] and two[1][1] == Click(False, (5, 6), 1)
    doc = parse_objects({"objects": [{"clicks": [[1, 2, True]]}, {"clicks": []}]})
    assert [len(o) for o in doc] == [1, 0]
    with pytest.raises(ValueError):
        parse_objects("1,2,+")
    with pytest.raises(ValueError, match="object 2"):
        parse_objects([[[1, 2, True]], 5])


def test_load_model_announces_untrained(capsys, tmp_path):
    with pytest.warns(UntrainedModelWarning, match="UNTRAINED"):
        m = load_model(None, NAME, **tiny_overrides(NAME))
    assert m.checkpoint_path is None and not m.training
    assert "results/runs/vit/model.safetensors" in capsys.readouterr().err
    from icmformer.models.checkpoint import save_checkpoint

    save_checkpoint(m, tmp_path / "t.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedModelWarning)
        m2 = load_model(tmp_path / "t.safetensors")
    assert m2.checkpoint_path == str(tmp_path / "t.safetensors")
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(tmp_path / "nope.safetensors")


def test_notebook_paths_are_relative_to_the_repository(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "icmformer").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    monkeypatch.chdir(repo / "notebooks")  # JupyterLab runs a notebook in its folder
    assert resolve_path("results/annotate") == repo / "results" / "annotate"
    monkeypatch.chdir(repo)  # papermill from the repository root
    assert resolve_path("results/annotate") == repo / "results" / "annotate"
    assert resolve_path(tmp_path / "abs") == tmp_path / "abs"
    assert resolve_path(None) is None
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # a notebooks/ folder outside a repository: left alone
    assert resolve_path("x") == tmp_path / "notebooks" / "x"


# ------------------------------------------------------------------------------ attention
def test_attention_shapes_and_normalisation(model, image):
    clicks = [[40, 40, True], [10, 100, False]]
    res = run_attention(model, image, clicks)
    assert res.grid == (4, 4) and res.input_size == (64, 64) and res.num_blocks == 2
    assert res.query_stream == "clicks" and res.variant == "X,Y,XY"
    for a in res.cross_attention:
        assert a.shape == (2, 16, 16)
        np.testing.assert_allclose(a.sum(axis=-1), 1.0, atol=1e-5)  # softmax rows
    assert res.click_tokens.shape == (16, 32)
    assert res.prob.shape == (96, 128) and res.prob.dtype == np.float32
    # the same prediction as the predictor without zoom-in / flip
    # (the attention pass uses the explicit softmax instead of fused attention: equal up to rounding)
    p = Predictor(model, zoom_in=False, flip=False)
    p.set_image(image)
    p.add_click(40, 40, True)
    _, ref = p.add_click(10, 100, False)
    np.testing.assert_allclose(res.prob, ref, atol=1e-4)

    q = res.query_token(0)
    assert q == token_index(40, 40, (96, 128), (4, 4)) == 1 * 4 + 1
    maps = res.maps(1, 0)
    assert maps.shape == (2, 4, 4)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps.reshape(2, 16), res.cross_attention[1][:, q, :])
    mean = res.mean_map(1, 0)
    np.testing.assert_allclose(mean, maps.mean(axis=0))
    norm = normalize_map(maps)
    assert norm.max(axis=(1, 2)) == pytest.approx([1.0, 1.0]) and norm.min() >= 0
    col = query_maps(res.cross_attention[1], q, res.grid, "column")
    np.testing.assert_allclose(col.sum(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(col[0] * res.cross_attention[1][0, :, q].sum(), res.cross_attention[1][0, :, q].reshape(4, 4), rtol=1e-5)
    up = upsample_map(mean, res.image_size)
    assert up.shape == (96, 128) and up.dtype == np.float32
    assert upsample_map(maps, (8, 8), "nearest").shape == (2, 8, 8)
    with pytest.raises(ValueError, match="direction"):
        query_maps(res.cross_attention[0], 0, res.grid, "diagonal")
    with pytest.raises(ValueError, match="grid"):
        query_maps(res.cross_attention[0], 0, (5, 5))


def test_token_index_corners():
    assert token_index(0, 0, (96, 128), (4, 4)) == 0
    assert token_index(95, 127, (96, 128), (4, 4)) == 15
    assert token_index(23, 32, (96, 128), (4, 4)) == 1  # row 0 (23 < 24), column 1 (32 >= 32)
    assert token_index(24, 31, (96, 128), (4, 4)) == 4
    with pytest.raises(ValueError, match="outside"):
        token_index(96, 0, (96, 128), (4, 4))


def test_windowed_block_attends_only_inside_the_query_window(model, image):
    # query click at token (3, 2): window (1, 1) of the 2x2-token windows = tokens rows 2-3, cols 2-3
    res = run_attention(model, image, [[80, 70, True], [10, 10, False]])
    q = res.query_token(0)
    assert divmod(q, 4) == (3, 2)
    inside = np.zeros((4, 4), bool)
    inside[2:4, 2:4] = True
    windowed = res.maps(0, 0)  # block 1 is windowed
    assert np.all(windowed[:, ~inside] == 0)
    np.testing.assert_allclose(windowed[:, inside].sum(axis=1), 1.0, atol=1e-5)
    assert np.all(windowed[:, inside] > 0)
    pixels = upsample_map(windowed.mean(axis=0), res.image_size, "nearest")
    assert np.all(pixels[:48, :] == 0) and np.all(pixels[:, :64] == 0) and np.all(pixels[48:, 64:] > 0)
    glob = res.maps(1, 0)  # block 2 is global
    assert np.all(glob[:, ~inside] > 0)


def test_click_token_features(model, image):
    res = run_attention(model, image, [[40, 40, True]])
    norm = click_token_norm(res.click_tokens, res.grid)
    np.testing.assert_allclose(norm.reshape(-1), np.linalg.norm(res.click_tokens, axis=1), rtol=1e-6)
    pca = click_token_pca(res.click_tokens, res.grid, 3)
    assert pca.shape == (4, 4, 3) and pca.min() == 0 and pca.max() == pytest.approx(1.0)
    # PC1 orders the tokens as the projection on the top singular vector does (up to sign)
    x = res.click_tokens - res.click_tokens.mean(axis=0)
    pc1 = x @ np.linalg.svd(x, full_matrices=False)[2][0]
    corr = np.corrcoef(pc1, pca[..., 0].reshape(-1))[0, 1]
    assert abs(corr) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="click_tokens"):
        click_token_norm(res.click_tokens[:5], res.grid)


def test_run_attention_on_a_variant_with_image_queries(image):
    torch.manual_seed(0)
    m = create_model(NAME, **tiny_overrides(NAME), cross_variant="X,Y,YX").eval()
    res = run_attention(m, image, [[40, 40, True]], iterative=False)
    assert res.query_stream == "image" and res.variant == "X,Y,YX" and res.num_blocks == 2


# ------------------------------------------------------------------------------ overlays
def test_overlays():
    img = np.full((10, 12, 3), 100, np.uint8)
    m = np.zeros((10, 12), bool)
    m[2:8, 3:9] = True
    out = overlay_masks(img, [m], colors=[(200, 0, 0)], alpha=0.5, outline=False)
    assert np.all(out[~m] == 100) and np.all(out[m] == (150, 50, 50))
    out = overlay_masks(img, [m], colors=[(200, 0, 0)], alpha=0.5)
    assert np.all(out[2, 3] == (200, 0, 0)) and np.all(out[4, 5] == (150, 50, 50))
    heat = np.zeros((10, 12), np.float32)
    heat[0, 0] = 1
    h = overlay_heatmap(img, heat, alpha=1.0, cmap="gray")
    assert np.all(h[0, 0] == 255) and np.all(h[5, 5] == 0)
    with pytest.raises(ValueError, match="upsample"):
        overlay_heatmap(img, np.zeros((4, 4)))


# ------------------------------------------------------------------------------ widget (no browser)
def test_widget_mouse_events_drive_the_session(model, image, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backend_bases import MouseButton, MouseEvent

    from icmformer.interactive.widget import AnnotationUI

    ui = AnnotationUI(session_for(model, image), output_dir=tmp_path)
    try:
        assert "0 clicks" in ui.status.value

        def press(y, x, button):
            px, py = ui.ax.transData.transform((x, y))
            ev = MouseEvent("button_press_event", ui.fig.canvas, px, py, button=button)
            ui.fig.canvas.callbacks.process("button_press_event", ev)

        press(40, 40, MouseButton.LEFT)
        press(10, 100, MouseButton.RIGHT)
        s = ui.session
        assert [c.to_list() for c in s.current.clicks] == [[40, 40, True], [10, 100, False]]
        assert "2 clicks (1+ 1-)" in ui.status.value and "last click" in ui.status.value
        ui.mode.value = False  # left click now adds negative clicks
        press(90, 5, MouseButton.LEFT)
        assert s.current.clicks[-1].to_list() == [90, 5, False]
        ui.undo_button.click()
        assert s.current.num_clicks == 2
        ui.next_button.click()
        assert s.current_index == 1 and "object 2 of 2" in ui.status.value
        ui.mode.value = True
        press(70, 100, MouseButton.LEFT)
        rgba = ui.overlay_rgba()
        assert rgba.shape == (96, 128, 4) and rgba[..., 3].max() > 0
        ui.export_button.click()
        assert (tmp_path / "demo_object_2.png").exists() and "exported 2 object(s)" in ui.message.value
        ui.reset_button.click()
        assert s.current.num_clicks == 0
        ui.undo_button.click()  # back to object 1
        ui.undo_button.click()
        ui.undo_button.click()
        ui.undo_button.click()  # nothing left: no error
        assert s.annotated == [] and "error" not in ui.message.value.lower()
        press(-50, -50, MouseButton.LEFT)  # outside the axes: ignored
        assert s.current.num_clicks == 0
        ui.output_dir = None
        ui.export_button.click()  # an error is shown in the UI, not raised
        assert "ValueError" in ui.message.value
    finally:
        ui.close()
