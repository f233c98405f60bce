"""Loaders for the book's data sets: MNIST, Fashion-MNIST, Magnetic Tile Defect and MVTec AD.

Every loader finds its files through :mod:`helpers.assets` (offline root, cache or download).
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import assets

MAGNETIC_TILE_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


# --------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed) into a uint8 array.

    The format: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    then one big-endian uint32 per dimension, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(
            f"{path} is not a readable idx{'.gz' if path.suffix == '.gz' else ''} file: {err}"
        ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(
            f"{path}: only unsigned-byte idx files are supported (type code {raw[2]:#x})"
        )
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated: header says {shape}, found {data.size} values"
        )
    return data.reshape(shape)


def _load_idx_pair(asset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    folder = assets.locate(asset)
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{asset} {split}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    return images, labels


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits: uint8 images (N, 28, 28) and uint8 labels (N,)."""
    return _load_idx_pair("mnist", split)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST: uint8 images (N, 28, 28) and uint8 labels (N,); see FASHION_MNIST_CLASSES."""
    return _load_idx_pair("fashion-mnist", split)


# --------------------------------------------------------------------------------------------
# Inspection images with masks
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One inspection image: uint8 pixels (HxW grayscale or HxWx3 RGB), a boolean mask, its type."""

    path: Path
    image: np.ndarray
    mask: np.ndarray
    defect_type: str

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type not in ("Free", "good")


@dataclass
class Split:
    """A data set split into defect-free training images, good / defective test images and, when
    asked for (:func:`with_validation`), good / defective validation images for every choice of
    settings or thresholds, so that the test images play no part in any choice."""

    name: str
    train: list[Sample]
    good_test: list[Sample]
    defect_test: list[Sample]
    info: dict = field(default_factory=dict)
    good_validation: list[Sample] = field(default_factory=list)
    defect_validation: list[Sample] = field(default_factory=list)

    @property
    def test(self) -> list[Sample]:
        return self.good_test + self.defect_test

    @property
    def validation(self) -> list[Sample]:
        return self.good_validation + self.defect_validation

    def counts(self) -> dict[str, int]:
        out = {"train": len(self.train), "good_test": len(self.good_test)}
        for s in self.defect_test:
            out[s.defect_type] = out.get(s.defect_type, 0) + 1
        if self.good_validation or self.defect_validation:
            out["good_validation"] = len(self.good_validation)
            for s in self.defect_validation:
                key = f"{s.defect_type}_validation"
                out[key] = out.get(key, 0) + 1
        return out


def with_validation(split: Split, fraction: float, seed: int = 0) -> Split:
    """``split`` with a validation set carved out: ``round(fraction * n)`` of the ``n`` training
    (defect-free) images become good validation images, and as many as ``round(fraction * n_t)``
    of each defect type's ``n_t`` test images become defective validation images (at least one per
    type while the type keeps a test image). Drawn with ``seed``; every list stays in file order.

    The good test images are left as they were, so a chapter that uses no validation set sees the
    same good test images as one that does.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in [0, 1), got {fraction}: it is the share of the "
            "training images and of each defect type's test images kept for choosing settings"
        )
    if split.good_validation or split.defect_validation:
        raise ValueError(f"split {split.name!r} already has a validation set")
    if fraction == 0.0:
        return split
    rng = np.random.default_rng(
        [seed, 1]
    )  # apart from the stream that drew the good test images
    n_val = int(round(fraction * len(split.train)))
    if n_val >= len(split.train):
        raise ValueError(
            f"validation_fraction {fraction} leaves no training image of {len(split.train)}"
        )
    pick = set(rng.permutation(len(split.train))[:n_val].tolist())
    train = [s for i, s in enumerate(split.train) if i not in pick]
    good_val = [s for i, s in enumerate(split.train) if i in pick]
    defect_test, defect_val = [], []
    for t in dict.fromkeys(s.defect_type for s in split.defect_test):
        of_type = [s for s in split.defect_test if s.defect_type == t]
        n = min(max(1, int(round(fraction * len(of_type)))), len(of_type) - 1)
        chosen = set(rng.permutation(len(of_type))[:n].tolist())
        defect_val += [s for i, s in enumerate(of_type) if i in chosen]
        defect_test += [s for i, s in enumerate(of_type) if i not in chosen]
    return Split(
        split.name,
        train,
        list(split.good_test),
        defect_test,
        info={**split.info, "validation_fraction": fraction},
        good_validation=good_val,
        defect_validation=defect_val,
    )


def smoke_subset(
    split: Split,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> tuple[list[Sample], list[Sample]]:
    """The training and test images a quick (smoke) run uses: ``train_limit``
    training images drawn with ``seed`` (kept in file order), and
    ``test_limit // 2`` good test images plus every k-th defective one (about
    as many), so that each type of a split listed type by type appears.
    ``None`` keeps a list whole."""
    train, test = list(split.train), split.test
    if train_limit is not None:
        if not 1 <= train_limit <= len(train):
            raise ValueError(
                f"train_limit must be in [1, {len(train)}], got {train_limit}"
            )
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(train), train_limit, replace=False))
        train = [train[i] for i in pick]
    if test_limit is not None:
        if not 2 <= test_limit // 2 * 2 <= 2 * len(split.defect_test):
            raise ValueError(
                "test_limit must be at least 2 and at most twice the "
                f"{len(split.defect_test)} defective test images, "
                f"got {test_limit}"
            )
        step = len(split.defect_test) // (test_limit // 2)
        test = split.good_test[: test_limit // 2] + split.defect_test[::step]
    return train, test


GREY_MODES = ("L", "LA", "1", "I;16", "I;16B", "I;16L", "I", "F")


def _open_image(path: Path) -> Image.Image:
    """Open and decode an image file, turned upright by its EXIF orientation tag (phones and many
    cameras store pixels as the sensor read them and record the rotation in the tag; every image viewer
    applies it, so masks drawn on the shown image fit only the turned pixels)."""
    if not path.exists():
        raise FileNotFoundError(f"image file {path} does not exist")
    if not path.is_file():
        raise ValueError(
            f"{path} is not a file (a folder?): pass the path of one image file"
        )
    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            if upright is img:
                upright = img.copy()
            return upright
    except Image.DecompressionBombError as err:
        raise ValueError(
            f"{path} is too large to read safely ({err}); resize it first, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable image (unreadable or truncated): {err}"
        ) from err


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey images (``I;16*``, ``I``, ``F``) scaled to 8 bit: by 65535 when any value
    exceeds 255, else taken as 0-255 (floats in [0, 1] by 1)."""
    if img.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return img
    arr = np.asarray(img, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("image contains NaN or infinite values")
    top = (
        65535.0
        if arr.max() > 255
        else (1.0 if img.mode == "F" and arr.max() <= 1 else 255.0)
    )
    return Image.fromarray(
        np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    )


def read_image(path: str | Path, mode: str = "L") -> np.ndarray:
    """Read an image file as uint8 ("L" grayscale, "RGB", or "auto": grayscale files stay HxW,
    all others become HxWx3 RGB), with a clear error for bad files.

    The EXIF orientation tag is applied, as image viewers do (masks are read the same way). 16- and
    32-bit images are scaled to 8 bit; alpha channels are dropped; palette images are converted to RGB
    (or L). A multi-frame file (TIFF stack, GIF) gives its first frame.
    """
    if mode not in ("L", "RGB", "auto"):
        raise ValueError(f"mode must be 'L', 'RGB' or 'auto', got {mode!r}")
    path = Path(path)
    img = _open_image(path)
    if mode == "auto":
        mode = "L" if img.mode in GREY_MODES else "RGB"
    try:
        img = _to_8bit(img)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return np.asarray(img.convert(mode), dtype=np.uint8).copy()


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a mask as bool and check it matches the image ``shape``.

    Masks come in several conventions, all read here: 0/255 grey (with a few grey values at the edges,
    as in the Magnetic Tile set: thresholded at 128); 0/1 or small label indices (0 = background, any
    value below 128 elsewhere = defect); colour masks from annotation tools (RGB or palette: a pixel is
    a defect when its brightest channel is, by the same rule; fully transparent pixels are background).
    The EXIF orientation is applied as for images.
    """
    path = Path(path)
    img = _open_image(path)
    if img.mode == "P":
        img = img.convert("RGBA")
    try:
        img = _to_8bit(img)
    except ValueError as err:
        raise ValueError(f"mask {path}: {err}") from None
    arr = np.asarray(
        img.convert("RGBA") if img.mode not in ("L", "RGB", "RGBA") else img,
        dtype=np.uint8,
    )
    if arr.ndim == 3:
        raw = arr[..., :3].max(axis=2)
        if arr.shape[2] == 4:
            raw = np.where(arr[..., 3] == 0, 0, raw)
    else:
        raw = arr
    top = int(raw.max(initial=0))
    mask = raw > 0 if top < 128 else raw >= 128
    if mask.shape != tuple(shape):
        raise ValueError(
            f"mask {path} has size {mask.shape[::-1]} (w, h) but its image has "
            f"{tuple(shape)[::-1]}: masks must match their image pixel for pixel"
        )
    return mask


def _magnetic_tile_folder(root: str | Path | None) -> Path:
    if root is None:
        return assets.locate("magnetic-tile")
    root = Path(root)
    missing = [
        t
        for t in ("Free",) + MAGNETIC_TILE_TYPES
        if not any((root / f"MT_{t}" / "Imgs").glob("*.jpg"))
    ]
    if missing:
        raise assets.AssetLayoutError(
            f"{root} is not a Magnetic Tile Defect folder: no images in "
            f"{', '.join(f'MT_{t}/Imgs' for t in missing)} (expected MT_<Type>/Imgs/<name>.jpg + .png masks)"
        )
    return root


def _magnetic_tile_type(folder: Path, t: str) -> list[Sample]:
    """Every image of type ``t`` (``Free`` or a defect type) with its mask, in file order."""
    out = []
    for jpg in sorted((folder / f"MT_{t}" / "Imgs").glob("*.jpg")):
        image = read_image(jpg, "L")
        png = jpg.with_suffix(".png")
        if not png.is_file():
            raise assets.AssetLayoutError(
                f"Magnetic Tile image {jpg} has no mask {png.name}"
            )
        out.append(Sample(jpg, image, read_mask(png, image.shape), t))
    return out


def load_magnetic_tile(
    seed: int = 0,
    good_test_fraction: float = 0.4,
    root: str | Path | None = None,
    types: tuple[str, ...] = MAGNETIC_TILE_TYPES,
    validation_fraction: float = 0.0,
) -> Split:
    """The Magnetic Tile Defect set (Huang et al. 2020) in its native ``MT_<Type>/Imgs`` layout.

    Defect-free (``MT_Free``) images are split with ``seed``: ``good_test_fraction`` of them are
    held back as good test images, the rest form the training pool. Every defect image of
    ``types`` is a test anomaly, with its binary mask. ``validation_fraction`` > 0 carves a
    validation set out of the training pool and of each defect type (:func:`with_validation`).
    """
    if not 0.0 < good_test_fraction < 1.0:
        raise ValueError(
            f"good_test_fraction must be in (0, 1), got {good_test_fraction}"
        )
    unknown = set(types) - set(MAGNETIC_TILE_TYPES)
    if unknown:
        raise ValueError(
            f"unknown defect types {sorted(unknown)}; choose from {MAGNETIC_TILE_TYPES}"
        )
    folder = _magnetic_tile_folder(root)
    free = _magnetic_tile_type(folder, "Free")
    order = np.random.default_rng(seed).permutation(len(free))
    n_test = int(round(good_test_fraction * len(free)))
    good_test = [free[i] for i in sorted(order[:n_test])]
    train = [free[i] for i in sorted(order[n_test:])]
    defects = [s for t in types for s in _magnetic_tile_type(folder, t)]
    split = Split(
        "magnetic-tile",
        train,
        good_test,
        defects,
        info={
            "seed": seed,
            "good_test_fraction": good_test_fraction,
            "root": str(folder),
        },
    )
    return with_validation(split, validation_fraction, seed)


def load_magnetic_tile_differnet(
    root: str | Path | None = None, split_file: str | Path | None = None
) -> Split:
    """The Magnetic Tile set on the published split of DifferNet (Rudolph et al. 2021), which the
    PatchCore paper's Magnetic Tile experiment follows: the 761 ``MT_Free`` images named in the split
    file are the training images, the other ``MT_Free`` images the good test images, and every defect
    image (with its mask) a test anomaly. No validation set: the protocol has none.

    ``split_file``: the list of training file names (default: the ``mtd-differnet-split`` asset)."""
    folder = _magnetic_tile_folder(root)
    split_file = (
        Path(split_file)
        if split_file is not None
        else assets.asset_file(
            "mtd-differnet-split", "mtd_differnet_train.txt"
        )
    )
    names = [
        line.strip()
        for line in Path(split_file).read_text().splitlines()
        if line.strip()
    ]
    if len(set(names)) != len(names):
        raise ValueError(f"{split_file} names some training images twice")
    free = _magnetic_tile_type(folder, "Free")
    on_disk = {s.path.name for s in free}
    missing = [n for n in names if n not in on_disk]
    if missing:
        raise assets.AssetLayoutError(
            f"{len(missing)} training images named in {split_file} are not in {folder / 'MT_Free' / 'Imgs'} "
            f"(first: {missing[0]}): the split file does not belong to this copy of the Magnetic Tile set"
        )
    train_names = set(names)
    train = [s for s in free if s.path.name in train_names]
    good_test = [s for s in free if s.path.name not in train_names]
    defects = [
        s for t in MAGNETIC_TILE_TYPES for s in _magnetic_tile_type(folder, t)
    ]
    return Split(
        "magnetic-tile (DifferNet split)",
        train,
        good_test,
        defects,
        info={"split_file": str(split_file), "root": str(folder)},
    )


def image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` by suffix (any case), sorted; hidden files (``.DS_Store``, the
    ``._name.png`` companions macOS writes on USB sticks) are skipped."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not p.name.startswith(".")
        and p.is_file()
    )


def _mvtec_images(folder: Path) -> list[Path]:
    files = image_files(folder)
    if not files:
        raise assets.AssetLayoutError(
            f"MVTec AD folder {folder} holds no images"
        )
    return files


def load_mvtec(
    category: str,
    root: str | Path | None = None,
    validation_fraction: float = 0.0,
    seed: int = 0,
) -> Split:
    """One MVTec AD category (Bergmann et al. 2019) in its standard layout, RGB images.

    ``root`` is a folder holding ``<category>/train/good``, ``<category>/test/<defect>`` and
    ``<category>/ground_truth/<defect>/<name>_mask.png``; by default the asset is located (and
    downloaded on demand when online). ``validation_fraction`` > 0 carves a validation set out of
    ``train/good`` and of each defect type (:func:`with_validation`, drawn with ``seed``).
    With ``root``, ``category`` may be any folder name: your own parts in MVTec AD's layout.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in [0, 1), got {validation_fraction}"
        )
    if root is None and category not in assets.MVTEC_CATEGORIES:
        raise ValueError(
            f"unknown MVTec AD category {category!r}; choose from "
            f"{assets.MVTEC_CATEGORIES}, or pass root= to read a folder of "
            "your own in the MVTec AD layout (any category name)"
        )
    if not category or Path(category).name != category:
        raise ValueError(
            f"category must be a folder name (no path), got {category!r}"
        )
    base = (
        Path(root)
        if root is not None
        else assets.locate("mvtec-ad", subfolder=category)
    )
    folder = base / category
    for split in ("train/good", "test/good"):
        if not (folder / split).is_dir():
            raise assets.AssetLayoutError(
                f"{folder} is not an MVTec AD category folder: '{split}' is missing "
                "(expected train/good, test/<defect>, ground_truth/<defect>)"
            )
    train = [
        Sample(p, read_image(p, "RGB"), np.zeros(0, bool), "good")
        for p in _mvtec_images(folder / "train" / "good")
    ]
    for s in train:
        s.mask = np.zeros(s.image.shape[:2], bool)
    good, defects = [], []
    for defect_dir in sorted(
        d for d in (folder / "test").iterdir() if d.is_dir()
    ):
        for p in _mvtec_images(defect_dir):
            image = read_image(p, "RGB")
            if defect_dir.name == "good":
                good.append(
                    Sample(p, image, np.zeros(image.shape[:2], bool), "good")
                )
                continue
            mask_path = (
                folder
                / "ground_truth"
                / defect_dir.name
                / f"{p.stem}_mask.png"
            )
            if not mask_path.is_file():
                raise assets.AssetLayoutError(
                    f"MVTec AD test image {p} has no mask {mask_path}"
                )
            defects.append(
                Sample(
                    p,
                    image,
                    read_mask(mask_path, image.shape[:2]),
                    defect_dir.name,
                )
            )
    if not defects:
        raise assets.AssetLayoutError(f"{folder}/test holds no defect folders")
    split = Split(
        f"mvtec-{category}", train, good, defects, info={"root": str(folder)}
    )
    return with_validation(split, validation_fraction, seed)
