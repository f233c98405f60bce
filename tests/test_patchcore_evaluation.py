from dataclasses import dataclass

import numpy as np
import pytest

from helpers.patchcore import PatchCore
from helpers.patchcore.evaluation import evaluate, study
from helpers.patchcore.testing import toy_backbone, toy_images, toy_settings


@dataclass
class S:
    image: np.ndarray
    mask: np.ndarray
    defect_type: str


def _test_set():
    good = [
        S(im, np.zeros(im.shape, bool), "Free")
        for im in toy_images(3, seed=11)
    ]
    bad = []
    for i, im in enumerate(toy_images(3, seed=12)):
        im = im.copy()
        im[8:20, 10:30] = 255
        m = np.zeros(im.shape, bool)
        m[8:20, 10:30] = True
        bad.append(S(im, m, "Blob" if i < 2 else "Other"))
    return good + bad


def test_evaluate_per_type_and_study_matches_predict():
    test = _test_set()
    train = [S(im, np.zeros(im.shape, bool), "Free") for im in toy_images(4)]
    settings = toy_settings(preprocess="letterbox")
    model = PatchCore(toy_backbone(), **settings).fit([s.image for s in train])
    scores, maps = model.predict([s.image for s in test])
    masks = [model.mask_for(s.mask, s.image) for s in test]
    ev = evaluate(scores, maps, masks, [s.defect_type for s in test])
    assert (
        set(ev["per_type"]) == {"Blob", "Other"}
        and ev["per_type"]["Blob"]["n"] == 2
    )
    assert 0 <= ev["pro"] <= 1 and ev["image_auroc"] == 1.0
    rows = study(
        train,
        test,
        base=settings,
        feature_variants=[{}],
        model_variants=[{}, {"k": 1}],
        backbone=toy_backbone(),
        batch_size=4,
        progress=False,
    )
    # study scores the same batches with the same code as predict: equal maps
    # bit for bit (measured 0), and AUROC is exact rank arithmetic; abs 1e-6
    # would allow ~9 swapped pixel pairs of 1/(720 * 12720) each
    assert rows[0]["image_auroc"] == pytest.approx(ev["image_auroc"])
    assert rows[0]["pixel_auroc"] == pytest.approx(ev["pixel_auroc"], abs=1e-6)
    assert rows[0]["bank_patches"] == rows[1]["bank_patches"]


def test_study_shares_passes_and_coresets_yet_equals_separate_models():
    """One backbone pass per preprocessing and one greedy run per projection
    serve every variant: each row must equal a model fitted and run on its own
    (same operations on the same numbers: exactly)."""
    test = _test_set()
    train = [S(im, np.zeros(im.shape, bool), "Free") for im in toy_images(4)]
    settings = toy_settings(preprocess="letterbox")
    features = [
        {},
        {"pool": False},
        {"layers": ("layer2",)},
        {"layers": ("layer2", "layer3", "layer4")},
        {"preprocess": "center_crop"},
        {"tile_centre": True},
    ]
    models = [
        {"coreset_ratio": 0.05},
        {"coreset_ratio": 0.25},
        {"coreset_ratio": 0.25, "k": 1},
        {"coreset_ratio": 1.0, "k": 2},
    ]
    rows = study(
        train,
        test,
        base=settings,
        feature_variants=features,
        model_variants=models,
        backbone=toy_backbone(),
        batch_size=4,
        progress=False,
    )
    assert len(rows) == len(features) * len(models)
    types = [s.defect_type for s in test]
    for i, fv in enumerate(features):
        for j, mv in enumerate(models):
            row = rows[i * len(models) + j]
            assert {**fv, **mv}.items() <= row.items()
            assert row["backbone_pass_shared_by"] == (
                1 if fv.get("preprocess") == "center_crop" else 5
            )
            alone = PatchCore(toy_backbone(), **{**settings, **fv, **mv}).fit(
                [s.image for s in train]
            )
            scores, maps = alone.predict([s.image for s in test])
            ev = evaluate(
                scores,
                maps,
                [alone.mask_for(s.mask, s.image) for s in test],
                types,
                per_type=False,
            )
            assert row["bank_patches"] == alone.bank.shape[0]
            for metric in ("image_auroc", "pixel_auroc", "pro"):
                assert row[metric] == ev[metric], (
                    fv,
                    mv,
                    metric,
                    row[metric],
                    ev[metric],
                )
    # the nested coreset: 5% of the patches
    # are the first choices of the 25% run
    assert rows[0]["bank_patches"] < rows[1]["bank_patches"]


def test_a_prefix_of_a_larger_greedy_run_is_the_smaller_coreset():
    import torch

    patches = torch.randn(600, 48, generator=torch.Generator().manual_seed(3))
    small = PatchCore(
        toy_backbone(), **toy_settings(coreset_ratio=0.05)
    ).fit_patches(patches)
    big = PatchCore(toy_backbone(), **toy_settings(coreset_ratio=0.05))
    selection = big.coreset_selection(patches, 120)
    big.fit_patches(patches, selection=selection)
    assert torch.equal(small.coreset_index, big.coreset_index) and torch.equal(
        small.bank, big.bank
    )
    assert small.fit_info["coverage_radius_projected"] == pytest.approx(
        big.fit_info["coverage_radius_projected"]
    )
    with pytest.raises(
        ValueError, match="has 10 choices; this model keeps 30"
    ):
        big.fit_patches(patches, selection=big.coreset_selection(patches, 10))


def test_study_over_several_training_sets_equals_one_call_each():
    test = _test_set()
    sets = {
        2: [
            S(im, np.zeros(im.shape, bool), "Free")
            for im in toy_images(2, seed=5)
        ],
        4: [S(im, np.zeros(im.shape, bool), "Free") for im in toy_images(4)],
    }
    settings = toy_settings(preprocess="letterbox")
    together = study(
        sets,
        test,
        base=settings,
        feature_variants=[{}],
        model_variants=[{}, {"k": 1}],
        backbone=toy_backbone(),
        batch_size=4,
        progress=False,
    )
    assert [r["train_set"] for r in together] == [2, 2, 4, 4]
    for label, images in sets.items():
        alone = study(
            images,
            test,
            base=settings,
            feature_variants=[{}],
            model_variants=[{}, {"k": 1}],
            backbone=toy_backbone(),
            batch_size=4,
            progress=False,
        )
        mine = [r for r in together if r["train_set"] == label]
        for a, b in zip(alone, mine):
            assert "train_set" not in a
            for metric in (
                "image_auroc",
                "pixel_auroc",
                "pro",
                "bank_patches",
            ):
                assert a[metric] == b[metric]
    with pytest.raises(ValueError, match="no training sets"):
        study(
            {},
            test,
            base=settings,
            feature_variants=[{}],
            model_variants=[{}],
            backbone=toy_backbone(),
        )


def test_study_can_leave_its_fits_in_the_build_cache(monkeypatch, tmp_path):
    """With ``cache_fits`` a later ``PatchCore.fit`` of the same settings on
    the same images loads the study's model: the same bank, the same scores."""
    import torch

    from helpers.patchcore import cache

    monkeypatch.setenv(cache.ENV, str(tmp_path))
    test = _test_set()
    train = [S(im, np.zeros(im.shape, bool), "Free") for im in toy_images(4)]
    settings = toy_settings(preprocess="letterbox")
    variants = [{"coreset_ratio": 0.1}, {"coreset_ratio": 0.25}]
    common = dict(
        base=settings, feature_variants=[{}], model_variants=variants
    )
    study(train, test, backbone=toy_backbone(), progress=False, **common)
    assert not list(tmp_path.glob("patchcore-*")), "stored without asking"
    rows = study(
        train,
        test,
        backbone=toy_backbone(),
        progress=False,
        cache_fits=True,
        **common,
    )
    assert len(list(tmp_path.glob("patchcore-*"))) == len(variants)
    for row, mv in zip(rows, variants):
        again = PatchCore(toy_backbone(), **{**settings, **mv}).fit(train)
        assert again.fit_info.get("from_cache") is True
        assert set(again.fit_info["seconds"]) == {"features", "coreset"}
        monkeypatch.delenv(cache.ENV)
        fresh = PatchCore(toy_backbone(), **{**settings, **mv}).fit(train)
        monkeypatch.setenv(cache.ENV, str(tmp_path))
        assert torch.equal(again.bank, fresh.bank)
        assert "from_cache" not in fresh.fit_info
        assert fresh.fit_info["seconds"]["features"] > 0
        scores, maps = again.predict([s.image for s in test])
        ev = evaluate(
            scores,
            maps,
            [again.mask_for(s.mask, s.image) for s in test],
            [s.defect_type for s in test],
            per_type=False,
        )
        assert ev["image_auroc"] == row["image_auroc"]
        assert ev["pro"] == row["pro"]


def test_evaluate_gives_each_defect_type_the_metrics_of_its_own_subset():
    """evaluate's one-pass pixel metrics equal pixel_metrics on each subset
    (all images; each defect type with every defect-free image)."""
    from helpers.patchcore import metrics as M

    rng = np.random.default_rng(3)
    types = ["Free"] * 4 + ["Crack", "Crack", "Blowhole", "Uneven", "Uneven"]
    masks = [
        (rng.random((8, 10)) < 0.25)
        if t != "Free"
        else np.zeros((8, 10), bool)
        for t in types
    ]
    maps = [rng.random((8, 10)).astype(np.float32) + 0.5 * m for m in masks]
    scores = np.array([a.max() for a in maps])
    ev = evaluate(scores, maps, masks, types)
    assert (ev["pixel_auroc"], ev["pro"]) == M.pixel_metrics(masks, maps)
    good = [i for i, t in enumerate(types) if t == "Free"]
    for t in ("Crack", "Blowhole", "Uneven"):
        sel = sorted(good + [i for i, u in enumerate(types) if u == t])
        want = M.pixel_metrics([masks[i] for i in sel], [maps[i] for i in sel])
        row = ev["per_type"][t]
        assert (row["pixel_auroc"], row["pro"]) == want
        assert row["n"] == types.count(t)
    with pytest.raises(ValueError, match="one type per test image"):
        evaluate(scores[:-1], maps, masks, types[:-1])
