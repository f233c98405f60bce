"""Your own images: folders in, a calibrated model, scores.csv and heat maps out; the command
line end to end; and the overlay the heat maps are drawn with."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.patchcore import PatchCore, metrics
from helpers.patchcore import inspection as insp
from helpers.patchcore.overlay import OUTLINE_RGB, heat_overlay, outline
from helpers.patchcore.testing import toy_backbone, toy_images, toy_settings

ROOT = Path(__file__).resolve().parent.parent


def _folders(root: Path, n_good: int = 12, size=(48, 64)) -> dict[str, Path]:
    """good/: smooth random images; inspect/: 3 good ones and 3 with a bright square, whose
    masks are in masks/ (named <stem>_mask.png, as MVTec AD names them)."""
    dirs = {k: root / k for k in ("good", "inspect", "masks")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for i, im in enumerate(toy_images(n_good, seed=1, shape=size)):
        Image.fromarray(im).save(dirs["good"] / f"g{i:02d}.png")
    for i, im in enumerate(toy_images(6, seed=2, shape=size)):
        if i >= 3:
            mask = np.zeros(size, bool)
            mask[10:26, 20:36] = True
            im = im.copy()
            im[mask] = 255
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                dirs["masks"] / f"t{i}_mask.png"
            )
        Image.fromarray(im).save(dirs["inspect"] / f"t{i}.png")
    return dirs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    dirs = _folders(root)
    net = toy_backbone()
    model = insp.fit_folder(
        dirs["good"],
        validation_fraction=0.25,
        q=90,
        backbone=net,
        **toy_settings(preprocess="letterbox"),
    )
    return dirs, model, net


def test_fit_folder_holds_out_good_images_and_sets_the_percentile_threshold(
    fitted,
):
    dirs, model, _ = fitted
    cal = insp.calibration_of(model)
    assert (cal.n_fit, cal.n_validation) == (9, 3)
    held = model.fit_info["validation_files"]
    assert not set(held) & set(model.fit_info["fit_files"])
    scores, maps = model.predict(
        insp.read_images([dirs["good"] / f for f in held], progress=False)
    )
    assert cal.threshold == pytest.approx(
        metrics.percentile_threshold(scores, 90), rel=1e-6
    )
    assert cal.median == pytest.approx(float(np.median(scores)), rel=1e-6)
    assert cal.normalise(np.array([cal.median, cal.threshold])) == (
        pytest.approx([0.0, 1.0])
    )


def test_inspect_folder_writes_scores_csv_and_heat_maps(fitted, tmp_path):
    dirs, model, net = fitted
    model.save(tmp_path / "model")
    loaded = PatchCore.load(tmp_path / "model", backbone=net)
    assert insp.calibration_of(loaded) == insp.calibration_of(model)
    rows = insp.inspect_folder(
        loaded,
        dirs["inspect"],
        tmp_path / "out",
        masks=dirs["masks"],
        progress=False,
    )
    with open(tmp_path / "out" / "scores.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["file"] for r in table] == [f"t{i}.png" for i in range(6)]
    assert [float(r["score"]) for r in table] == [r["score"] for r in rows]
    cal = insp.calibration_of(loaded)
    for r in rows:
        assert r["anomalous"] == (r["score"] > cal.threshold)
        png = np.asarray(Image.open(tmp_path / "out" / r["heatmap"]))
        assert png.shape == (48, 64, 3) and png.dtype == np.uint8
    assert [r["mask"] != "" for r in rows] == [False] * 3 + [True] * 3
    assert all(r["defect_pixels"] == 256 for r in rows[3:])
    # the bright squares score above every good image, and their outlines are drawn
    s = np.array([r["score"] for r in rows])
    assert s[3:].min() > s[:3].max()
    summary = insp.summary(rows)
    assert summary["images"] == 6 and summary["defective"] == 3
    assert summary["image_auroc"] == 1.0
    marked = np.asarray(Image.open(tmp_path / "out" / rows[3]["heatmap"]))
    assert (marked == OUTLINE_RGB).all(-1).sum() > 0
    assert not list((tmp_path / "out").glob(".inspect-*"))  # no leftovers


def test_bad_folders_get_clear_errors(fitted, tmp_path):
    dirs, model, _ = fitted
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(insp.FolderError, match="holds no images"):
        insp.image_paths(tmp_path / "empty")
    with pytest.raises(insp.FolderError, match="does not exist"):
        insp.image_paths(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(insp.FolderError, match="cannot read .*broken.png"):
        insp.inspect_folder(model, bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "scores.csv").exists()
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(toy_images(1)[0]).save(one / "a.png")
    with pytest.raises(insp.FolderError, match="at least two"):
        insp.fit_folder(one, backbone=toy_backbone(), **toy_settings())
    twins = tmp_path / "twins"
    twins.mkdir()
    Image.fromarray(toy_images(1)[0]).save(twins / "a.png")
    Image.fromarray(toy_images(1)[0]).save(twins / "a.jpg")
    with pytest.raises(insp.FolderError, match="share a name"):
        insp.image_paths(twins)
    plain = PatchCore(toy_backbone(), **toy_settings()).fit(toy_images(4))
    with pytest.raises(ValueError, match="has no threshold"):
        insp.inspect_folder(plain, dirs["inspect"], tmp_path / "o2")


def test_overlay_is_the_image_where_the_map_is_low_and_outlines_the_mask():
    image = np.full((20, 30), 100, np.uint8)
    amap = np.zeros((20, 30))
    amap[5:10, 5:10] = 3.0
    mask = np.zeros((20, 30), bool)
    mask[12:18, 15:25] = True
    out = heat_overlay(image, amap, low=1.0, high=2.0, mask=mask)
    assert out.shape == (20, 30, 3)
    edge = outline(mask)
    assert edge.sum() == 2 * (6 + 10) - 4 and not edge[14, 20]
    assert (out[edge] == OUTLINE_RGB).all()
    assert (out[0, 0] == 100).all()  # map below `low`: the image itself
    assert not (out[7, 7] == 100).all()  # map above `high`: coloured
    with pytest.raises(ValueError, match="differ"):
        heat_overlay(image, amap[:10], 1.0, 2.0)
    with pytest.raises(ValueError, match="must be above"):
        heat_overlay(image, amap, 2.0, 2.0)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helpers.patchcore.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_command_line_fit_and_predict_end_to_end(tmp_path):
    """The real (offline) backbone, small images: fit, predict, CSV and PNGs written; an empty
    folder and a missing model give one clear line and exit status 2."""
    dirs = _folders(tmp_path / "data", n_good=8, size=(64, 80))
    fit = _cli(
        "fit",
        str(dirs["good"]),
        str(tmp_path / "model"),
        "--image-size",
        "64",
        "--coreset-ratio",
        "0.25",
        "--k",
        "3",
        "--no-progress",
    )
    assert fit.returncode == 0, fit.stderr
    assert "threshold" in fit.stdout and "held-out good images" in fit.stdout
    assert (tmp_path / "model" / "memory_bank.safetensors").is_file()
    out = tmp_path / "out"
    pred = _cli(
        "predict",
        str(tmp_path / "model"),
        str(dirs["inspect"]),
        str(out),
        "--masks",
        str(dirs["masks"]),
        "--no-progress",
    )
    assert pred.returncode == 0, pred.stderr
    assert "6 images" in pred.stdout and "3 with a defect mask" in pred.stdout
    with open(out / "scores.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 6
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == [
        f"t{i}.png" for i in range(6)
    ]
    (tmp_path / "empty").mkdir()
    empty = _cli("fit", str(tmp_path / "empty"), str(tmp_path / "m2"))
    assert empty.returncode == 2
    assert (
        "holds no images" in empty.stderr and "Traceback" not in empty.stderr
    )
    missing = _cli(
        "predict", str(tmp_path / "nomodel"), str(dirs["inspect"]), str(out)
    )
    assert missing.returncode == 2 and "not a saved PatchCore model" in (
        missing.stderr
    )


def test_demo_folders_replace_only_what_they_made(tmp_path):
    mine = tmp_path / "project" / "good"
    mine.mkdir(parents=True)
    (mine / "my_photo.png").write_bytes(b"not to be lost")
    with pytest.raises(FileExistsError, match="not made by make_demo_folders"):
        insp.make_demo_folders(tmp_path / "project", 3, 1, 1)
    assert (mine / "my_photo.png").read_bytes() == b"not to be lost"

    root = tmp_path / "demo"
    (root / "notes").mkdir(parents=True)
    first = insp.make_demo_folders(root, 3, 1, 1)
    again = insp.make_demo_folders(root, 2, 1, 2, seed=1)
    assert first == again
    assert len(insp.image_paths(again["good"])) == 2
    assert len(insp.image_paths(again["inspect"])) == 3
    assert (root / "notes").is_dir()  # not one of its folders: kept
    made = insp.make_demo_folders(root, 2, 1, 1, layout="mvtec")
    insp.make_demo_folders(root, 2, 1, 1, layout="mvtec")
    assert (made["category"] / "train" / "good").is_dir()
    assert again["good"].is_dir()  # the other layout's folders stay
