"""helpers.patchcore.report: the study tables print exactly what the
evaluation chapter's own formatting code printed."""

from __future__ import annotations

from helpers.patchcore.report import STUDY_HEAD, study_row, study_table


def _chapter_fmt(r, keys):
    # the formatting code as it stood in the chapter (05-evaluation, cell-15)
    label = ", ".join(f"{k_}={r[k_]}" for k_ in keys if k_ in r) or "defaults"
    cs = (
        f"none ({r['coreset_s']:.1f} s to copy and index the bank)"
        if r.get("coreset_ratio") == 1.0
        else f"{r['coreset_s']:.1f}"
    )
    shared = (
        " (one pass for %d rows)" % r["backbone_pass_shared_by"]
        if r.get("backbone_pass_shared_by", 1) > 1
        else ""
    )
    ms = (
        f"{r['test_features_ms_per_image']:.0f}{shared}"
        f" + {r['scoring_ms_per_image']:.1f}"
    )
    return (
        f"| {label} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f}"
        f" | {r['pro']:.3f} | {r['bank_patches']:,} ({r['bank_mb']:.0f} MB)"
        f" | {cs} | {ms} |"
    )


_HEAD = [
    (
        "| setting | image AUROC | pixel AUROC | PRO | bank (patches, MB)"
        " | coreset s | ms/image (CNN + NN) |"
    ),
    "|---|---|---|---|---|---|---|",
]


def _row(**kw):
    r = {
        "image_auroc": 0.91234,
        "pixel_auroc": 0.8,
        "pro": 0.65432,
        "bank_patches": 12345,
        "bank_mb": 25.3,
        "coreset_s": 3.14159,
        "test_features_ms_per_image": 41.6,
        "scoring_ms_per_image": 2.25,
    }
    r.update(kw)
    return r


ROWS = [
    _row(preprocess="letterbox", image_size=320, layers=("layer2",)),
    _row(preprocess="resize", image_size=224, backbone_pass_shared_by=3),
    _row(coreset_ratio=1.0, k=9, backbone_pass_shared_by=1),
    _row(coreset_ratio=0.01, k=1),
    _row(n_train=428),
    _row(),
]
KEYS = [
    ("preprocess", "image_size", "pool", "layers"),
    ("coreset_ratio", "k"),
    ("n_train",),
]


def test_study_row_matches_the_chapter_formatting():
    for keys in KEYS:
        for r in ROWS:
            assert study_row(r, keys) == _chapter_fmt(r, keys)


def test_study_row_examples():
    assert study_row(_row(), ("k",)) == (
        "| defaults | 0.912 | 0.800 | 0.654 | 12,345 (25 MB) "
        "| 3.1 | 42 + 2.2 |"
    )
    assert study_row(
        _row(coreset_ratio=1.0, backbone_pass_shared_by=2), ("coreset_ratio",)
    ) == (
        "| coreset_ratio=1.0 | 0.912 | 0.800 | 0.654 | 12,345 (25 MB) "
        "| none (3.1 s to copy and index the bank) "
        "| 42 (one pass for 2 rows) + 2.2 |"
    )


def test_study_table_is_head_then_rows():
    for keys in KEYS:
        assert study_table(ROWS, keys) == "\n".join(
            _HEAD + [_chapter_fmt(r, keys) for r in ROWS]
        )
    assert list(STUDY_HEAD) == _HEAD
    assert study_table([], ("k",)) == "\n".join(_HEAD)
