"""The per-instance loop and the resumable runner."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from icmformer.data.datasets import FolderDataset
from icmformer.evaluation.loop import evaluate_sample
from icmformer.evaluation.runner import RECORDS, SUMMARY, read_records, run_evaluation


def disk_predictor(shape, radius=4):
    """A deterministic toy method: disks around positive clicks minus disks around negatives."""

    def predict(clicks):
        out = np.zeros(shape, np.float32)
        for c in clicks:
            if c.is_positive:
                cv2.circle(out, (c.coords[1], c.coords[0]), radius, 1.0, -1)
        for c in clicks:
            if not c.is_positive:
                cv2.circle(out, (c.coords[1], c.coords[0]), radius, 0.0, -1)
        return out

    return predict


def square_gt(h=40, w=50, box=(10, 30, 12, 38)):
    gt = np.zeros((h, w), np.int32)
    gt[box[0] : box[1], box[2] : box[3]] = 1
    return gt


def test_oracle_reaches_iou_one_and_runs_all_clicks_by_default():
    gt = square_gt()
    res = evaluate_sample(gt, lambda clicks: (gt == 1).astype(np.float32))
    assert res.n_clicks == 20 and res.ious[0] == 1.0
    assert len(res.method_times) == len(res.simulator_times) == len(res.clicks) == 20
    assert all(t >= 0 for t in res.method_times + res.simulator_times)
    # after a perfect prediction the simulator clicks negative at (0, 0), then the next pixel
    assert res.clicks[1].coords == (0, 0) and not res.clicks[1].is_positive


def test_stop_at_target_and_min_clicks():
    gt = square_gt()
    oracle = lambda clicks: (gt == 1).astype(np.float32)  # noqa: E731
    assert evaluate_sample(gt, oracle, stop_at_target=True).n_clicks == 1
    assert evaluate_sample(gt, oracle, stop_at_target=True, min_clicks=3).n_clicks == 3


def test_loop_feeds_back_the_prediction():
    gt = square_gt()
    res = evaluate_sample(gt, disk_predictor(gt.shape, radius=3), max_clicks=8)
    # rows 19 and 20 and columns 21..28 are all 10 px from the boundary; the first one wins
    assert res.clicks[0].coords == (19, 21)
    assert all(c.is_positive for c in res.clicks)  # the disks never cover background here
    assert len({c.coords for c in res.clicks}) == 8
    assert res.ious == sorted(res.ious)  # more disks, more overlap
    assert res.ious[0] == pytest.approx(29 / 520, rel=1e-6)  # a radius-3 disk is 29 px; the object 520 px
    assert res.last_probs.shape == gt.shape


def test_ignore_pixels_do_not_count():
    gt = square_gt()
    gt[:, :5] = -1
    res = evaluate_sample(gt, lambda clicks: ((gt == 1) | (gt == -1)).astype(np.float32), max_clicks=1)
    assert res.ious == [1.0]


def test_callback_sees_every_click():
    gt = square_gt()
    seen = []
    evaluate_sample(gt, disk_predictor(gt.shape), max_clicks=4, callback=lambda k, clicks, probs, iou: seen.append((k, len(clicks), iou)))
    assert [s[:2] for s in seen] == [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda clicks: np.zeros((3, 3), np.float32), "shape"),
        (lambda clicks: np.zeros((40, 50), np.int64), "floating"),
        (lambda clicks: [[0.0] * 50] * 40, "numpy"),
        (lambda clicks: np.full((40, 50), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_predict_fn_output_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        evaluate_sample(square_gt(), bad)


# ------------------------------------------------------------------------------ runner
def make_folder(root, n_images=3):
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    for i in range(n_images):
        img = rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "img" / f"im {i}.png"), img)
        m = np.zeros((30 + i, 40), np.uint8)
        m[5:15, 5 + i : 20 + i] = 255
        cv2.imwrite(str(root / "gt" / f"im {i}_1.png"), m)
        if i != 1:
            m2 = np.zeros_like(m)
            m2[18:27, 22:35] = 255
            cv2.imwrite(str(root / "gt" / f"im {i}_2.png"), m2)
    return root


class Interrupt(Exception):
    pass


class CountingFactory:
    """Disk predictor factory that counts instance starts and can fail at the (k+1)-th."""

    def __init__(self, fail_after=None):
        self.fail_after = fail_after
        self.instances = 0
        self.images = 0

    def __call__(self, sample):
        self.images += 1
        inner = disk_predictor(sample.image.shape[:2], radius=3)

        def predict(clicks):
            if len(clicks) == 1:
                if self.fail_after is not None and self.instances >= self.fail_after:
                    raise Interrupt("simulated crash")
                self.instances += 1
            return inner(clicks)

        return predict


def strip_times(records):
    drop = {"method_time", "simulator_time", "wall_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_runner_writes_records_and_summary(tmp_path):
    ds = FolderDataset(path=make_folder(tmp_path / "data"), name="toy")
    fac = CountingFactory()
    summary = run_evaluation([ds], None, fac, tmp_path / "out", max_clicks=5, progress=False)
    recs = read_records(tmp_path / "out" / RECORDS)
    assert len(recs) == ds.num_instances == 5 and fac.images == 3 and fac.instances == 5
    assert {r["instance_id"] for r in recs} == {"im 0_1", "im 0_2", "im 1_1", "im 2_1", "im 2_2"}
    r = recs[0]
    assert len(r["ious"]) == len(r["method_time"]) == len(r["simulator_time"]) == len(r["clicks"]) == r["n_clicks"] == 5
    on_disk = json.loads((tmp_path / "out" / SUMMARY).read_text())
    toy = on_disk["datasets"]["toy"]
    assert toy["instances"] == 5 and len(toy["mIoU@k"]) == 5 and toy["SPC"] > 0 and toy["SPC_method"] > 0
    assert toy["SPC"] >= toy["SPC_method"]
    assert summary["datasets"]["toy"]["NoC@90"] == toy["NoC@90"]
    assert "device" in on_disk and on_disk["run_time_s"] > 0


@pytest.mark.parametrize("k", [1, 3])
def test_runner_resumes_after_an_interruption(tmp_path, k):
    data = make_folder(tmp_path / "data")
    full = run_evaluation([FolderDataset(path=data, name="toy")], None, CountingFactory(), tmp_path / "full", max_clicks=6, progress=False)
    with pytest.raises(Interrupt):
        run_evaluation([FolderDataset(path=data, name="toy")], None, CountingFactory(fail_after=k), tmp_path / "cut", max_clicks=6, progress=False)
    assert len(read_records(tmp_path / "cut" / RECORDS)) == k
    fac = CountingFactory()
    resumed = run_evaluation([FolderDataset(path=data, name="toy")], None, fac, tmp_path / "cut", max_clicks=6, progress=False)
    assert fac.instances == 5 - k  # finished instances were not run again
    assert strip_times(read_records(tmp_path / "cut" / RECORDS)) == strip_times(read_records(tmp_path / "full" / RECORDS))
    for key in ("NoC@85", "NoC@90", "NoF@90", "mIoU@k"):
        assert resumed["datasets"]["toy"][key] == full["datasets"]["toy"][key]


def test_runner_survives_a_partially_written_last_line(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    run_evaluation([FolderDataset(path=data, name="toy")], None, CountingFactory(), out, max_clicks=4, progress=False)
    path = out / RECORDS
    lines = path.read_text().splitlines(keepends=True)
    complete = lines[:-1]
    path.write_text("".join(complete) + lines[-1][: len(lines[-1]) // 2])  # torn write of the last record
    assert len(read_records(path)) == 4
    fac = CountingFactory()
    run_evaluation([FolderDataset(path=data, name="toy")], None, fac, out, max_clicks=4, progress=False)
    assert fac.instances == 1
    recs = read_records(path)
    assert len(recs) == 5 and path.read_text().endswith("\n")
    assert strip_times(recs)[-1] == strip_times([json.loads(lines[-1])])[0]


def test_runner_rejects_a_broken_middle_line_and_a_changed_protocol(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    run_evaluation([FolderDataset(path=data, name="toy")], None, CountingFactory(), out, max_clicks=3, progress=False)
    with pytest.raises(ValueError, match="configuration"):
        run_evaluation([FolderDataset(path=data, name="toy")], None, CountingFactory(), out, max_clicks=4, progress=False)
    path = out / RECORDS
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(ValueError, match="line 2"):
        read_records(path)


def test_runner_limit_and_no_resume(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    s = run_evaluation([FolderDataset(path=data, name="toy")], None, CountingFactory(), out, max_clicks=2, progress=False, limit=2)
    assert s["datasets"]["toy"]["instances"] == 3 and s["datasets"]["toy"]["images_selected"] == 2
    fac = CountingFactory()
    run_evaluation([FolderDataset(path=data, name="toy")], None, fac, out, max_clicks=2, progress=False, limit=2, resume=False)
    assert fac.instances == 3 and len(read_records(out / RECORDS)) == 3
