"""helpers.assets: local root, cache, download (hash-checked, atomic, retried) and clear errors."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from helpers import assets, data

SHARED_ASSETS = (
    Path(__file__).resolve().parents[2] / "shared" / "assets"
).resolve()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _toy_asset(
    monkeypatch, url: str, body: bytes, sha: str | None = None
) -> assets.Asset:
    toy = assets.Asset(
        name="toy",
        folder="toy",
        title="a toy file",
        licence="CC0",
        citation="none",
        files=(
            assets.RemoteFile(
                "toy.bin", url, sha if sha is not None else _sha(body)
            ),
        ),
        required=("toy.bin",),
    )
    monkeypatch.setitem(assets.ASSETS, "toy", toy)
    return toy


def _leftovers(folder: Path) -> list[Path]:
    return (
        [p for p in folder.rglob("*") if p.is_file()]
        if folder.exists()
        else []
    )


def test_found_in_assets_root(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "toy.bin").write_bytes(b"local bytes")
    _toy_asset(monkeypatch, "http://127.0.0.1:9/never-used", b"other bytes")
    monkeypatch.setenv("VAD_ASSETS", str(root))
    monkeypatch.setenv("VAD_CACHE", str(tmp_path / "cache"))
    assert assets.asset_file("toy", "toy.bin") == root / "toy" / "toy.bin"
    assert not (tmp_path / "cache").exists()


def test_local_file_checked_against_sha256sums(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "toy.bin").write_bytes(b"tampered")
    (root / "SHA256SUMS").write_text(f"{_sha(b'original')}  ./toy/toy.bin\n")
    _toy_asset(monkeypatch, "http://127.0.0.1:9/x", b"original")
    monkeypatch.setenv("VAD_ASSETS", str(root))
    with pytest.raises(assets.AssetError, match="does not match its sha256"):
        assets.locate("toy")


def test_downloaded_from_loopback_server(
    isolated_assets, http_server, monkeypatch
):
    body = bytes(range(256)) * 100
    http_server.routes["/toy.bin"] = {"body": body}
    _toy_asset(monkeypatch, http_server.url + "/toy.bin", body)
    path = assets.asset_file("toy", "toy.bin")
    assert path == isolated_assets / "toy" / "toy.bin"
    assert path.read_bytes() == body
    assert _leftovers(isolated_assets) == [path]  # no temporary files left
    # a second call uses the cache and does not download again
    assets.asset_file("toy", "toy.bin")
    assert http_server.hits["/toy.bin"] == 1


def test_hash_mismatch_rejected_and_nothing_left(
    isolated_assets, http_server, monkeypatch
):
    http_server.routes["/toy.bin"] = {"body": b"the wrong file"}
    _toy_asset(
        monkeypatch,
        http_server.url + "/toy.bin",
        b"",
        sha=_sha(b"the right file"),
    )
    with pytest.raises(assets.AssetNotFoundError, match="sha256 mismatch"):
        assets.locate("toy")
    assert _leftovers(isolated_assets) == []


def test_truncated_download_rejected(
    isolated_assets, http_server, monkeypatch
):
    body = b"x" * 10_000
    http_server.routes["/toy.bin"] = {"body": body, "truncate": 4_000}
    _toy_asset(monkeypatch, http_server.url + "/toy.bin", body)
    with pytest.raises(assets.AssetNotFoundError, match="truncated|failed"):
        assets.locate("toy")
    assert _leftovers(isolated_assets) == []


def test_server_errors_are_retried_a_bounded_number_of_times(
    tmp_path, http_server
):
    body = b"eventually fine"
    http_server.routes["/flaky"] = {"body": body, "fail_times": 2}
    dest = tmp_path / "flaky.bin"
    assets.download(
        http_server.url + "/flaky",
        dest,
        _sha(body),
        retries=3,
        backoff=0.01,
        progress=False,
    )
    assert dest.read_bytes() == body and http_server.hits["/flaky"] == 3

    http_server.routes["/down"] = {"body": body, "fail_times": 99}
    with pytest.raises(assets.DownloadError, match="after 2 attempts"):
        assets.download(
            http_server.url + "/down",
            tmp_path / "down.bin",
            _sha(body),
            retries=2,
            backoff=0.01,
            progress=False,
        )
    assert http_server.hits["/down"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flaky.bin"]


def test_client_error_is_not_retried(tmp_path, http_server):
    with pytest.raises(assets.DownloadError, match="HTTP 404"):
        assets.download(
            http_server.url + "/missing",
            tmp_path / "m.bin",
            None,
            backoff=0.01,
            progress=False,
        )
    assert http_server.hits["/missing"] == 1
    assert list(tmp_path.iterdir()) == []


def test_slow_server_hits_the_timeout(tmp_path, http_server):
    http_server.routes["/slow"] = {"body": b"late", "delay": 2.0}
    with pytest.raises(assets.DownloadError, match="failed after 1 attempts"):
        assets.download(
            http_server.url + "/slow",
            tmp_path / "slow.bin",
            None,
            timeout=0.3,
            retries=1,
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_absent_offline_gives_a_clear_error(isolated_assets, monkeypatch):
    monkeypatch.setenv("VAD_OFFLINE", "1")
    with pytest.raises(assets.AssetNotFoundError) as err:
        assets.locate("mnist")
    text = str(err.value)
    assert "'mnist'" in text and str(isolated_assets / "mnist") in text
    assert "VAD_OFFLINE=1" in text and "VAD_ASSETS" in text


def test_no_public_download_says_how_to_provide_it(isolated_assets):
    with pytest.raises(assets.AssetNotFoundError, match="no public download"):
        assets.locate("resnet50_v1")


def test_empty_or_misnamed_folder_is_a_layout_error(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    (root / "magnetic-tile").mkdir(parents=True)  # empty
    monkeypatch.setenv("VAD_ASSETS", str(root))
    monkeypatch.setenv("VAD_OFFLINE", "1")
    with pytest.raises(assets.AssetLayoutError, match="MT_Free/Imgs"):
        assets.locate("magnetic-tile")
    (root / "magnetic-tile" / "MT_free" / "Imgs").mkdir(
        parents=True
    )  # wrong case
    (root / "magnetic-tile" / "MT_free" / "Imgs" / "a.jpg").write_bytes(b"")
    with pytest.raises(assets.AssetLayoutError, match="lacks"):
        assets.locate("magnetic-tile")


def test_unknown_asset_lists_the_known_ones():
    with pytest.raises(KeyError, match="known assets: .*mnist"):
        assets.get_asset("cifar")


def test_every_asset_is_declared_with_source_licence_and_citation():
    for asset in assets.ASSETS.values():
        assert asset.licence and asset.citation and asset.title
        for f in asset.files + ((asset.archive,) if asset.archive else ()):
            assert f.sha256 is None or len(f.sha256) == 64
        if asset.downloadable:
            assert all(
                (f.url or "").startswith("http")
                for f in asset.files
                + ((asset.archive,) if asset.archive else ())
            )


def test_download_of_idx_asset_then_load(
    isolated_assets, http_server, monkeypatch
):
    """The MNIST loader works from a cache filled by the downloader (a tiny idx pair)."""
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([1, 9], np.uint8)
    img_bytes = gzip.compress(
        b"\x00\x00\x08\x03"
        + (2).to_bytes(4, "big")
        + (28).to_bytes(4, "big") * 2
        + images.tobytes()
    )
    lab_bytes = gzip.compress(
        b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + labels.tobytes()
    )
    files = []
    for name in assets.get_asset("mnist").required:
        body = img_bytes if "images" in name else lab_bytes
        http_server.routes["/" + name] = {"body": body}
        files.append(
            assets.RemoteFile(name, f"{http_server.url}/{name}", _sha(body))
        )
    real = assets.get_asset("mnist")
    monkeypatch.setitem(
        assets.ASSETS,
        "mnist",
        assets.Asset(**{**real.__dict__, "files": tuple(files)}),
    )
    x, y = data.load_mnist("test")
    assert np.array_equal(x, images) and np.array_equal(y, labels)


def test_offline_bundle_works_as_an_assets_root(tmp_path, monkeypatch):
    """`python -m helpers.assets bundle DEST` gives a folder the book runs from with no network."""
    dest = tmp_path / "bundle"
    assets._main(["bundle", str(dest), "--assets", "mnist", "magnetic-tile"])
    assert (dest / "SHA256SUMS").is_file() and (
        dest / "mnist" / "t10k-images-idx3-ubyte.gz"
    ).is_file()
    monkeypatch.setenv("VAD_ASSETS", str(dest))
    monkeypatch.setenv("VAD_OFFLINE", "1")
    monkeypatch.setenv("VAD_CACHE", str(tmp_path / "empty-cache"))
    assets._sums.cache_clear()
    assert assets.locate("mnist") == dest / "mnist"
    assert data.load_mnist("test")[0].shape == (10000, 28, 28)
    assert len(data.load_magnetic_tile().defect_test) == 392
    with pytest.raises(assets.AssetNotFoundError, match="fashion-mnist"):
        assets.locate("fashion-mnist")


def test_differnet_split_downloads_with_its_pinned_hash(
    isolated_assets, http_server, monkeypatch
):
    """The split file's pinned sha256 is that of the offline copy; served from a loopback URL in place of
    GitHub's, it downloads into the cache and passes the hash check."""
    body = (SHARED_ASSETS / "splits" / "mtd_differnet_train.txt").read_bytes()
    http_server.routes["/mtd_train_filenames.txt"] = {"body": body}
    real = assets.get_asset("mtd-differnet-split")
    moved = assets.RemoteFile(
        real.files[0].path,
        http_server.url + "/mtd_train_filenames.txt",
        real.files[0].sha256,
    )
    monkeypatch.setitem(
        assets.ASSETS,
        real.name,
        assets.Asset(**{**real.__dict__, "files": (moved,)}),
    )
    path = assets.asset_file("mtd-differnet-split", "mtd_differnet_train.txt")
    assert path.read_bytes() == body and len(body.splitlines()) == 761


def _tiny_mvtec_archive(category: str) -> bytes:
    """A tar.xz laid out as MVTec AD's per-category archives: <category>/train/good, test/<defect>,
    ground_truth/<defect>/<stem>_mask.png."""
    import io
    import tarfile

    from PIL import Image

    def png(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    image = np.full((16, 16, 3), 120, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    members = {
        f"{category}/train/good/000.png": png(image),
        f"{category}/train/good/001.png": png(image),
        f"{category}/test/good/000.png": png(image),
        f"{category}/test/crack/000.png": png(image),
        f"{category}/ground_truth/crack/000_mask.png": png(mask),
        f"{category}/license.txt": b"CC BY-NC-SA 4.0",
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:xz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_mvtec_category_downloads_its_own_archive_not_the_whole_set(
    isolated_assets, http_server, monkeypatch
):
    """One category comes from its own archive (about 100-700 MB), not the 5.3 GB set: served from a
    loopback URL with its sha256, it is downloaded, checked, unpacked and read by load_mvtec."""
    real = assets.get_asset("mvtec-ad")
    assert set(real.part_archives) == set(assets.MVTEC_CATEGORIES)
    for category, remote in real.part_archives.items():
        assert remote.url.startswith("https://www.mydrive.ch/shares/")
        assert remote.url.endswith(f"/{category}.tar.xz")
        assert (
            len(remote.sha256) == 64 and remote.sha256 != real.archive.sha256
        )
    body = _tiny_mvtec_archive("bottle")
    http_server.routes["/bottle.tar.xz"] = {"body": body}
    parts = dict(real.part_archives)
    parts["bottle"] = assets.RemoteFile(
        "mvtec-bottle.tar.xz", http_server.url + "/bottle.tar.xz", _sha(body)
    )
    whole = assets.RemoteFile(  # must not be asked for
        "whole.tar.xz", http_server.url + "/whole.tar.xz", _sha(b"x")
    )
    monkeypatch.setitem(
        assets.ASSETS,
        real.name,
        assets.Asset(
            **{**real.__dict__, "part_archives": parts, "archive": whole}
        ),
    )
    split = data.load_mvtec("bottle")
    assert split.counts() == {"train": 2, "good_test": 1, "crack": 1}
    assert split.defect_test[0].mask.sum() == 16
    assert http_server.hits == {"/bottle.tar.xz": 1}
    # a damaged download is rejected before anything is unpacked
    parts["zipper"] = assets.RemoteFile(
        "mvtec-zipper.tar.xz",
        http_server.url + "/bottle.tar.xz",
        _sha(b"other"),
    )
    with pytest.raises(assets.AssetNotFoundError, match="sha256"):
        data.load_mvtec("zipper")
    assert not (isolated_assets / "mvtec-ad" / "zipper").exists()
