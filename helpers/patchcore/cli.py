"""PatchCore on your own folders of images, from the command line.

  patchcore-inspect fit GOOD_FOLDER MODEL_FOLDER [options]
  patchcore-inspect predict MODEL_FOLDER IMAGES_FOLDER OUT_FOLDER [--masks MASKS_FOLDER]

(or ``python -m helpers.patchcore.cli ...``). ``fit`` builds the memory bank from defect-free
images, holds a share of them out to set the threshold (I.6's percentile rule) and saves the
model; ``predict`` writes ``OUT_FOLDER/scores.csv`` and one heat map per image under
``OUT_FOLDER/heatmaps/``. With ``--masks`` (a folder of ``<stem>.png`` or ``<stem>_mask.png``
defect masks) the heat maps outline the defects and the summary counts misses and false alarms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchcore-inspect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit on a folder of defect-free images")
    fit.add_argument("good", help="folder of defect-free images")
    fit.add_argument("model", help="folder to save the model in")
    fit.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="share of the good images held out to set the threshold "
        "(default 0.2)",
    )
    fit.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="flag images scoring above this percentile of the held-out "
        "good scores (default 99)",
    )
    # unset options keep fit_folder's defaults (the book's: letterbox, 320 px, 1%, k=9)
    fit.add_argument("--backbone", help="default: auto")
    fit.add_argument(
        "--preprocess", choices=("letterbox", "center_crop", "resize")
    )
    fit.add_argument("--image-size", type=int, help="default: 320")
    fit.add_argument("--coreset-ratio", type=float, help="default: 0.01")
    fit.add_argument("--k", type=int, help="default: 9")
    fit.add_argument("--seed", type=int, default=0)
    predict = sub.add_parser("predict", help="inspect a folder of images")
    predict.add_argument("model", help="folder of a model saved by `fit`")
    predict.add_argument("images", help="folder of images to inspect")
    predict.add_argument("out", help="folder for scores.csv and heatmaps/")
    predict.add_argument(
        "--masks", help="folder of defect masks (optional)", default=None
    )
    for p in (fit, predict):
        p.add_argument(
            "--no-progress", action="store_true", help="no progress bars"
        )
    return parser


def _fit(args) -> None:
    from .inspection import calibration_of, fit_folder

    chosen = {
        name: getattr(args, name)
        for name in (
            "backbone",
            "preprocess",
            "image_size",
            "coreset_ratio",
            "k",
        )
        if getattr(args, name) is not None
    }
    model = fit_folder(
        args.good,
        validation_fraction=args.validation_fraction,
        q=args.percentile,
        seed=args.seed,
        progress=not args.no_progress,
        **chosen,
    )
    path = model.save(args.model)
    cal = calibration_of(model)
    print(
        f"fitted on {cal.n_fit} images ({model.backbone_description}); "
        f"threshold {cal.threshold:.4g} = {cal.q:g}th percentile of "
        f"{cal.n_validation} held-out good images; saved to {path}"
    )


def _predict(args) -> None:
    from .inspection import inspect_folder, summary
    from .model import PatchCore

    model = PatchCore.load(args.model)
    model.config.progress = not args.no_progress
    rows = inspect_folder(
        model,
        args.images,
        args.out,
        masks=args.masks,
        progress=not args.no_progress,
    )
    s = summary(rows)
    line = f"{s['images']} images, {s['flagged']} flagged"
    if "defective" in s:
        line += (
            f"; {s['defective']} with a defect mask: "
            f"{s['misses_per_100_defective']:.1f} misses per 100 defective, "
            f"{s['false_alarms_per_100_good']:.1f} false alarms per 100 good"
        )
        if "image_auroc" in s:
            line += f", image AUROC {s['image_auroc']:.3f}"
    out = Path(args.out)
    print(f"{line}. Wrote {out / 'scores.csv'} and {out / 'heatmaps'}/")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors in the input print one clear line and exit with 2."""
    from helpers.assets import AssetError

    args = _parser().parse_args(argv)
    try:
        (_fit if args.command == "fit" else _predict)(args)
    except (ValueError, FileNotFoundError, AssetError) as err:
        print(
            f"patchcore-inspect {args.command}: error: {err}", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
