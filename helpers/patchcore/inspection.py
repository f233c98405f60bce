"""Your own images: fit PatchCore on a folder of defect-free images, inspect another folder,
export the heat maps (PNG) and the scores (CSV).

The threshold is set as chapter I.6 teaches, from defect-free images only: a share of the good
folder (``validation_fraction``) is held out of the memory bank, and an image is flagged when its
score is above the ``q``-th percentile of those held-out scores. The threshold, the median
held-out score (for normalised scores: 0 = median good part, 1 = the threshold) and the colour
scale of the heat maps (from the held-out maps' pixels) are stored with the saved model (``fit_info["calibration"]``).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from helpers import data

from . import metrics
from .model import PatchCore
from .overlay import heat_overlay

# the book's defaults where they differ from the article's (chosen in chapter I.5)
BOOK_DEFAULTS = {"preprocess": "letterbox", "image_size": 320}


class FolderError(ValueError):
    """A folder of images that cannot be used: missing, empty, or with unreadable files."""


@dataclass
class Calibration:
    """What turns a score into a decision, from held-out defect-free images."""

    q: float  # percentile of the held-out good scores that sets the threshold
    threshold: float  # image score above which an image is flagged
    median: float  # median held-out good score (normalised score 0)
    # the heat maps' colour scale: transparent at the median pixel of the
    # held-out maps, top colour at the q-th percentile of their maxima
    pixel_low: float
    pixel_high: float
    n_fit: int
    n_validation: int

    def normalise(self, scores: np.ndarray) -> np.ndarray:
        """0 = the median good part, 1 = the threshold."""
        return (np.asarray(scores) - self.median) / (
            self.threshold - self.median
        )


def image_paths(folder: str | Path, what: str = "images") -> list[Path]:
    """The image files of ``folder`` (sorted), with a clear error for a missing or empty folder."""
    folder = Path(folder)
    if not folder.exists():
        raise FolderError(f"the {what} folder {folder} does not exist")
    if not folder.is_dir():
        raise FolderError(f"{folder} is a file: name a folder of {what}")
    paths = data.image_files(folder)
    if not paths:
        kinds = ", ".join(sorted(data.IMAGE_SUFFIXES))
        raise FolderError(
            f"the {what} folder {folder} holds no images ({kinds}); "
            "point it at a folder of image files"
        )
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise FolderError(
                f"{stems[p.stem].name} and {p.name} in {folder} share a name: "
                "their heat maps would overwrite each other; rename one"
            )
        stems[p.stem] = p
    return paths


def read_images(
    paths: Sequence[Path], progress: bool = True
) -> list[np.ndarray]:
    """Read every image as RGB (grayscale is repeated to three channels, as the backbone sees
    it anyway); an unreadable file raises :class:`FolderError` naming it."""
    from tqdm import tqdm

    out = []
    for p in tqdm(paths, desc="read", unit="img", disable=not progress):
        try:
            out.append(data.read_image(p, "RGB"))
        except (ValueError, OSError) as err:
            raise FolderError(
                f"cannot read {p}: {err}. Remove the file or convert it "
                "to PNG or JPEG"
            ) from None
    return out


def mask_path(image: Path, masks: Path) -> Path | None:
    """The mask of ``image`` in the folder ``masks``: ``<stem>_mask.<ext>`` (MVTec AD) or
    ``<stem>.<ext>`` (Magnetic Tile and most tools); None when there is none (defect-free)."""
    for suffix in ("_mask", ""):
        for ext in sorted(data.IMAGE_SUFFIXES):
            for name in (
                f"{image.stem}{suffix}{ext}",
                f"{image.stem}{suffix}{ext.upper()}",
            ):
                candidate = masks / name
                if candidate.is_file() and candidate != image:
                    return candidate
    return None


def fit_folder(
    good: str | Path,
    validation_fraction: float = 0.2,
    q: float = 99.0,
    seed: int = 0,
    **settings,
) -> PatchCore:
    """Fit PatchCore on the defect-free images of the folder ``good`` and calibrate its
    threshold on the held-out share ``validation_fraction`` of them (drawn with ``seed``).
    ``settings`` go to :class:`PatchCore` (``backbone``, ``image_size``, ``coreset_ratio``...);
    unset, ``preprocess`` and ``image_size`` are the book's defaults (letterbox at 320 px, chosen
    on validation images in chapter I.5), not the article's centre crop."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in (0, 1), got {validation_fraction}: "
            "the share of the good images held out to set the threshold"
        )
    if not 0.0 < q <= 100.0:
        raise ValueError(f"the percentile q must be in (0, 100], got {q}")
    paths = image_paths(good, "defect-free images")
    if len(paths) < 2:
        raise FolderError(
            f"{good} holds one image: at least two are needed, one to fit "
            "and one to set the threshold (a few dozen give a usable one)"
        )
    n_val = min(
        len(paths) - 1, max(1, round(validation_fraction * len(paths)))
    )
    order = np.random.default_rng(seed).permutation(len(paths))
    held = sorted(order[:n_val].tolist())
    fit = sorted(order[n_val:].tolist())
    progress = settings.get("progress", True)
    images = read_images(paths, progress)
    settings.setdefault("seed", seed)
    for name, value in BOOK_DEFAULTS.items():
        settings.setdefault(name, value)
    model = PatchCore(**settings).fit([images[i] for i in fit])
    scores, maps = model.predict([images[i] for i in held])
    pixels = np.concatenate([np.ravel(m) for m in maps])
    pixel_low = float(np.median(pixels))
    peaks = np.array([float(np.max(m)) for m in maps])
    pixel_high = float(metrics.percentile_threshold(peaks, q))
    threshold = metrics.percentile_threshold(scores, q)
    calibration = Calibration(
        q=float(q),
        threshold=float(threshold),
        median=float(np.median(scores)),
        pixel_low=pixel_low,
        pixel_high=max(pixel_high, pixel_low + 1e-6),
        n_fit=len(fit),
        n_validation=len(held),
    )
    if not calibration.threshold > calibration.median:
        # every held-out score equal (one image, or identical images): keep the scale usable
        calibration.threshold = calibration.median + 1e-6
    model.fit_info["calibration"] = asdict(calibration)
    model.fit_info["fit_files"] = [paths[i].name for i in fit]
    model.fit_info["validation_files"] = [paths[i].name for i in held]
    return model


def calibration_of(model: PatchCore) -> Calibration:
    """The calibration stored by :func:`fit_folder` (also after ``save`` / ``load``)."""
    stored = model.fit_info.get("calibration")
    if not stored:
        raise ValueError(
            "this model has no threshold: fit it with "
            "helpers.patchcore.inspection.fit_folder (or the command line's "
            "`fit`), which sets one from held-out defect-free images"
        )
    return Calibration(**stored)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


def inspect_folder(
    model: PatchCore,
    images: str | Path,
    out: str | Path,
    masks: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Score every image of the folder ``images``; write ``out/scores.csv`` (one row per image)
    and ``out/heatmaps/<stem>.png`` (the map over the image, defect outlined where ``masks``
    holds a mask). Returns the CSV's rows. The files are written into a temporary folder and
    moved into place at the end, so an interrupted run leaves no half-written results."""
    cal = calibration_of(model)
    paths = image_paths(images, "images to inspect")
    masks_dir = None if masks is None else Path(masks)
    if masks_dir is not None and not masks_dir.is_dir():
        raise FolderError(f"the masks folder {masks_dir} does not exist")
    arrays = read_images(paths, progress)
    scores, maps = model.predict(arrays)
    normalised = cal.normalise(scores)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".inspect-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "heatmaps").mkdir(parents=True)
    rows = []
    try:
        for p, a, s, z, m in zip(paths, arrays, scores, normalised, maps):
            mp = None if masks_dir is None else mask_path(p, masks_dir)
            mask = None
            if mp is not None:
                mask = model.mask_for(data.read_mask(mp, a.shape[:2]), a)
            frame = model.preprocessor.frame_image(a)
            picture = heat_overlay(
                frame, m, cal.pixel_low, cal.pixel_high, mask
            )
            _write_png(tmp / "heatmaps" / f"{p.stem}.png", picture)
            rows.append(
                {
                    "file": p.name,
                    "score": round(float(s), 6),
                    "normalised_score": round(float(z), 4),
                    "anomalous": bool(s > cal.threshold),
                    "mask": "" if mp is None else mp.name,
                    "defect_pixels": 0 if mask is None else int(mask.sum()),
                    "heatmap": f"heatmaps/{p.stem}.png",
                }
            )
        with open(tmp / "scores.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        shutil.rmtree(out / "heatmaps", ignore_errors=True)
        os.replace(tmp / "heatmaps", out / "heatmaps")
        os.replace(tmp / "scores.csv", out / "scores.csv")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def summary(rows: Sequence[dict]) -> dict:
    """Counts of a run of :func:`inspect_folder`; with masks (an image with a non-empty mask
    is defective, one without is defect-free) also misses and false alarms per 100 and, when
    both kinds are present, the image AUROC."""
    flagged = sum(r["anomalous"] for r in rows)
    out = {"images": len(rows), "flagged": flagged}
    labelled = [r for r in rows if r["mask"] or r["defect_pixels"]]
    if labelled:
        y = np.array([r["defect_pixels"] > 0 for r in rows])
        s = np.array([r["score"] for r in rows])
        threshold_hits = np.array([r["anomalous"] for r in rows])
        out["defective"] = int(y.sum())
        out["misses_per_100_defective"] = (
            100.0 * float((~threshold_hits & y).sum()) / max(1, int(y.sum()))
        )
        out["false_alarms_per_100_good"] = (
            100.0
            * float((threshold_hits & ~y).sum())
            / max(1, int((~y).sum()))
        )
        if 0 < y.sum() < len(y):
            out["image_auroc"] = metrics.auroc(y, s)
    return out


#: The file in ``root`` that lists the folders :func:`make_demo_folders` made
#: there, so that a later call replaces those and never anything else.
DEMO_MARK = ".demo-folders"


def _clear_demo_folders(root: Path, made: list[Path]) -> None:
    """Remove the folders an earlier call made; refuse to touch any other."""
    mark = root / DEMO_MARK
    ours = set(mark.read_text().split()) if mark.is_file() else set()
    for folder in made:
        if folder.exists() and folder.name not in ours:
            raise FileExistsError(
                f"{folder} exists and was not made by make_demo_folders; it "
                "is left as it is: pass a root folder of its own (new or "
                "empty)"
            )
    for folder in made:
        if folder.exists():
            shutil.rmtree(folder)


def _mark_demo_folders(root: Path, made: list[Path]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    mark = root / DEMO_MARK
    ours = set(mark.read_text().split()) if mark.is_file() else set()
    mark.write_text("\n".join(sorted(ours | {f.name for f in made})) + "\n")


def make_demo_folders(
    root: str | Path,
    n_good: int,
    n_inspect_good: int,
    n_inspect_defect: int,
    seed: int = 0,
    layout: str = "folders",
    category: str = "my_part",
) -> dict[str, Path]:
    """A stand-in for a reader's own folders, made of Magnetic Tile images (chapter I.7).

    ``layout="folders"``: ``root/good`` (``n_good`` defect-free images), ``root/inspect``
    (``n_inspect_good`` defect-free and ``n_inspect_defect`` defective images, the defects
    spread over the types) and ``root/masks`` (one ``<stem>.png`` per defective image).
    ``layout="mvtec"``: the same images in MVTec AD's layout under ``root/<category>``
    (``train/good``, ``test/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.png``).
    File names carry the defect type (``Crack_exp1_num4.jpg``), as images from several
    folders would. The folders are made afresh on every call: those an earlier
    call made are replaced, and a folder of the same name that it did not
    make raises ``FileExistsError`` and is left alone."""
    if layout not in ("folders", "mvtec"):
        raise ValueError(
            f"layout must be 'folders' or 'mvtec', got {layout!r}"
        )
    split = data.load_magnetic_tile(seed=seed)
    rng = np.random.default_rng(seed)
    if n_good > len(split.train) or n_inspect_good > len(split.good_test):
        raise ValueError(
            f"at most {len(split.train)} good and {len(split.good_test)} good "
            "images to inspect are available"
        )
    good = [
        split.train[i]
        for i in sorted(rng.permutation(len(split.train))[:n_good])
    ]
    inspect_good = split.good_test[:n_inspect_good]
    step = max(1, len(split.defect_test) // max(1, n_inspect_defect))
    defects = split.defect_test[::step][:n_inspect_defect]
    root = Path(root)
    base = root / category if layout == "mvtec" else root
    made = (
        [base / k for k in ("good", "inspect", "masks")]
        if layout == "folders"
        else [base]
    )
    _clear_demo_folders(root, made)

    def place(
        sample, folder: Path, mask_folder: Path | None, mask_suffix: str
    ):
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{sample.defect_type}_{sample.path.name}"
        shutil.copy2(sample.path, folder / name)
        if mask_folder is not None:
            from PIL import Image

            mask_folder.mkdir(parents=True, exist_ok=True)
            stem = Path(name).stem
            Image.fromarray(sample.mask.astype(np.uint8) * 255).save(
                mask_folder / f"{stem}{mask_suffix}.png"
            )

    _mark_demo_folders(root, made)
    if layout == "folders":
        dirs = {k: base / k for k in ("good", "inspect", "masks")}
        for s in good:
            place(s, dirs["good"], None, "")
        for s in inspect_good:
            place(s, dirs["inspect"], None, "")
        for s in defects:
            place(s, dirs["inspect"], dirs["masks"], "")
        return dirs
    for s in good:
        place(s, base / "train" / "good", None, "")
    for s in inspect_good:
        place(s, base / "test" / "good", None, "")
    for s in defects:
        t = s.defect_type
        place(s, base / "test" / t, base / "ground_truth" / t, "_mask")
    return {"root": root, "category": base}
