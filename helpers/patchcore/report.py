"""Markdown tables of the rows that :func:`.evaluation.study` returns.

Plumbing for the evaluation chapter: how a study row is printed, not what
it measures.
"""

from __future__ import annotations

from collections.abc import Sequence

STUDY_HEAD = (
    (
        "| setting | image AUROC | pixel AUROC | PRO | bank (patches, MB) "
        "| coreset s | ms/image (CNN + NN) |"
    ),
    "|---|---|---|---|---|---|---|",
)


def study_row(r: dict, keys: Sequence[str]) -> str:
    """One Markdown table row for the study row ``r``.

    The setting is labelled by those of ``keys`` that ``r`` holds
    ("defaults" if none); then the three metrics, the bank size, the
    coreset time and the milliseconds per image (CNN + nearest neighbour).
    """
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
        f"{r['test_features_ms_per_image']:.0f}{shared} + "
        f"{r['scoring_ms_per_image']:.1f}"
    )
    return (
        f"| {label} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} "
        f"| {r['pro']:.3f} | {r['bank_patches']:,} ({r['bank_mb']:.0f} MB) "
        f"| {cs} | {ms} |"
    )


def study_table(rows: Sequence[dict], keys: Sequence[str]) -> str:
    """The Markdown table of study ``rows`` (header, then one line each),
    each labelled by ``keys`` as in :func:`study_row`."""
    return "\n".join([*STUDY_HEAD, *(study_row(r, keys) for r in rows)])


def markdown_table(rows: Sequence[dict]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys): a header of the keys, then one
    line per row; floats with 3 decimals, booleans as yes / no."""
    if not rows:
        raise ValueError("no rows to tabulate")
    keys = list(rows[0])

    def cell(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(k.replace("_", " ") for k in keys) + " |"]
    lines.append("|" + "---|" * len(keys))
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
