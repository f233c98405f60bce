"""Images -> normalised tensors for the backbone, and the way back for anomaly
maps and masks.

Three geometries:

* ``"center_crop"`` - the article's: resize to ``resize`` x ``resize`` (square,
  ignoring the aspect ratio), then cut the central ``image_size`` x
  ``image_size`` crop. Anything near the border is lost.
* ``"resize"`` - resize straight to ``image_size`` x ``image_size`` (keeps the
  whole image, distorts it).
* ``"letterbox"`` - scale the long side to ``image_size`` keeping the aspect
  ratio and pad the short side (with the ImageNet mean, i.e. zeros after
  normalisation). Keeps the whole image, undistorted.

Maps come back in the *evaluation frame*: the crop for ``"center_crop"`` (masks
are cropped the same way by :meth:`Preprocessor.mask`), the original image size
for the other two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# torchvision's ImageNet statistics
from ..backbones import IMAGENET_MEAN, IMAGENET_STD
from ..data import read_image

MODES = ("center_crop", "resize", "letterbox")


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 (``HxW`` for grayscale, ``HxWx3``
    otherwise); see :func:`helpers.data.read_image` for the conversions and
    errors."""
    return read_image(path, "auto")


def as_image_array(image: np.ndarray | str | Path) -> np.ndarray:
    """Validate one image (array or path) and return it as uint8 ``HxW`` or
    ``HxWx3``."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, torch.Tensor):
        raise TypeError(
            "pass images as numpy arrays (HxW or HxWx3, uint8) or file paths, not tensors"
        )
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"an image must be a numpy array or a file path, got {type(image).__name__}"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(
            f"an image must be HxW (grayscale) or HxWx3 (RGB), got shape {image.shape}"
        )
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(
            f"image of shape {image.shape} is too small (at least 8x8 pixels)"
        )
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(
                f"images must be uint8 or floats in [0, 1], got dtype {image.dtype}"
            )
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(
                "float images must lie in [0, 1]; convert 0-255 floats with .astype(np.uint8)"
            )
        image = np.round(image * 255).astype(np.uint8)
    return image


@dataclass(frozen=True)
class Geometry:
    """Where an image of size ``(height, width)`` lands in the square network
    input."""

    height: int
    width: int
    scaled: tuple[int, int]  # size after resizing (h, w)
    # top-left of the image inside the input (pad) or of the crop (crop)
    offset: tuple[int, int]
    size: int  # network input side


@dataclass(frozen=True)
class Preprocessor:
    """Turn images into normalised ``[3, S, S]`` tensors and maps back into the
    evaluation frame."""

    mode: str = "center_crop"
    image_size: int = 224
    resize: int = 256

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"preprocessing mode {self.mode!r} unknown; choose from {MODES}"
            )
        if self.image_size < 32 or self.image_size % 8:
            raise ValueError(
                f"image_size must be a multiple of 8 and >= 32, got {self.image_size}"
            )
        if self.mode == "center_crop" and self.resize < self.image_size:
            raise ValueError(
                f"resize ({self.resize}) must be >= image_size ({self.image_size}) to crop"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def geometry(self, height: int, width: int) -> Geometry:
        s = self.image_size
        if self.mode == "center_crop":
            off = (self.resize - s) // 2
            return Geometry(
                height, width, (self.resize, self.resize), (off, off), s
            )
        if self.mode == "resize":
            return Geometry(height, width, (s, s), (0, 0), s)
        scale = s / max(height, width)
        sh, sw = max(1, round(height * scale)), max(1, round(width * scale))
        return Geometry(
            height, width, (sh, sw), ((s - sh) // 2, (s - sw) // 2), s
        )

    def image(self, image: np.ndarray | str | Path) -> torch.Tensor:
        """One image -> normalised float tensor ``[3, S, S]`` (grayscale is
        repeated to 3 channels)."""
        return self.batch([image])[0]

    def batch(self, images) -> torch.Tensor:
        """A list of images -> ``[b, 3, S, S]``, each written straight into the
        batch.

        A grayscale image is resized as one channel and repeated only when
        normalised: the same numbers as resizing its RGB conversion (PIL
        resizes each band alike), for a third of the resizing work."""
        s = self.image_size
        images = list(images)
        out = (torch.zeros if self.mode == "letterbox" else torch.empty)(
            len(images), 3, s, s
        )
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        for i, image in enumerate(images):
            arr = as_image_array(image)
            g = self.geometry(*arr.shape[:2])
            resized = np.asarray(
                Image.fromarray(arr).resize(
                    (g.scaled[1], g.scaled[0]), Image.BILINEAR
                )
            )
            x = torch.from_numpy(resized.copy())
            # [1 or 3, h, w]
            x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
            (oy, ox), dst = g.offset, out[i]
            if self.mode == "center_crop":
                x = x[:, oy : oy + s, ox : ox + s]
            elif self.mode == "letterbox":
                dst = out[i, :, oy : oy + g.scaled[0], ox : ox + g.scaled[1]]
            # letterbox padding stays 0 (the mean)
            torch.sub(x.float().div_(255), mean, out=dst).div_(std)
        return out

    def frame_shape(self, height: int, width: int) -> tuple[int, int]:
        """Shape of the evaluation frame (maps and masks) for an image of this
        size."""
        if self.mode == "center_crop":
            return (self.image_size, self.image_size)
        return (height, width)

    def mask(
        self, mask: np.ndarray, image_shape: tuple[int, int] | None = None
    ) -> np.ndarray:
        """A boolean mask (original image size) -> the evaluation frame
        (nearest-neighbour resize)."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"a mask must be HxW, got shape {mask.shape}")
        if image_shape is not None and tuple(mask.shape) != tuple(
            image_shape[:2]
        ):
            raise ValueError(
                f"mask of shape {mask.shape} does not match its image of shape "
                f"{tuple(image_shape[:2])}: masks must have their image's height and width"
            )
        mask = mask > 0 if mask.dtype != bool else mask
        if self.mode != "center_crop":
            return mask
        g = self.geometry(*mask.shape)
        m = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (g.scaled[1], g.scaled[0]), Image.NEAREST
        )
        oy, ox = g.offset
        return np.asarray(m)[oy : oy + g.size, ox : ox + g.size] > 127

    def frame_image(self, image: np.ndarray | str | Path) -> np.ndarray:
        """An image -> the evaluation frame, the pixels its anomaly map covers
        (the image itself, or for ``center_crop`` its resized centre crop)."""
        image = as_image_array(image)
        if self.mode != "center_crop":
            return image
        g = self.geometry(*image.shape[:2])
        scaled = Image.fromarray(image).resize(
            (g.scaled[1], g.scaled[0]), Image.BILINEAR
        )
        oy, ox = g.offset
        return np.asarray(scaled)[oy : oy + g.size, ox : ox + g.size]

    def map_to_frame(
        self, amap: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """An ``[S, S]`` map on the network input -> the evaluation frame of an
        ``height x width`` image."""
        if self.mode == "center_crop":
            return amap
        g = self.geometry(height, width)
        if self.mode == "letterbox":
            oy, ox = g.offset
            amap = amap[oy : oy + g.scaled[0], ox : ox + g.scaled[1]]
        if tuple(amap.shape) == (height, width):
            return amap
        return F.interpolate(
            amap[None, None],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
