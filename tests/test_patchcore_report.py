"""helpers.patchcore.report: the study tables of the evaluation chapter, row
by row, checked against rows written out by hand."""

from __future__ import annotations

import pytest

from helpers.patchcore.report import STUDY_HEAD, study_row, study_table


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
        lines = study_table(ROWS, keys).split("\n")
        assert lines[:2] == _HEAD
        assert lines[2:] == [study_row(r, keys) for r in ROWS]
        # every row has as many cells as the head
        assert {line.count("|") for line in lines} == {8}
    assert list(STUDY_HEAD) == _HEAD
    assert study_table([], ("k",)) == "\n".join(_HEAD)


def test_study_row_labels_by_the_keys_it_holds():
    r = _row(preprocess="letterbox", image_size=320, n_train=428)
    assert study_row(r, KEYS[0]).startswith(
        "| preprocess=letterbox, image_size=320 |"
    )
    assert study_row(r, KEYS[2]).startswith("| n_train=428 |")
    assert study_row(r, KEYS[1]).startswith("| defaults |")


def test_markdown_table_formats_cells():
    from helpers.patchcore.report import markdown_table

    table = markdown_table(
        [
            {"file": "a|b.png", "score_value": 1.23456, "flagged": True},
            {"file": "c.png", "score_value": 2.0, "flagged": False},
        ]
    )
    assert table.split("\n") == [
        "| file | score value | flagged |",
        "|---|---|---|",
        "| a\\|b.png | 1.235 | yes |",
        "| c.png | 2.000 | no |",
    ]
    with pytest.raises(ValueError, match="no rows"):
        markdown_table([])
