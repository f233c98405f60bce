import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc

from helpers.patchcore import metrics as M


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    # ours: exact rank sums (half-integers in float64) and one division;
    # sklearn: a float64 trapezoid over <= 501 ROC points, <= ~505 * 1.1e-16 =
    # 5.6e-14 off; abs 1e-12 covers it
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # exact: (7 - 3) / 4 and (1.5 - 1) / 1
    assert M.auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.auroc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both positive and negative"):
        M.auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="1 of 4 scores are NaN"):
        # sorted last, NaN would look perfect
        M.auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, np.nan])


def test_pixel_auroc_and_roc_curve():
    rng = np.random.default_rng(1)
    masks = [rng.random((6, 7)) > 0.7 for _ in range(3)]
    maps = [m * 0.5 + rng.random(m.shape) for m in masks]
    flat_y = np.concatenate([m.ravel() for m in masks])
    flat_s = np.concatenate([a.ravel() for a in maps])
    # the float32 maps keep these 126 scores' order, so the ranks are
    # sklearn's: equal up to its float64 trapezoid (~1.4e-14), while one
    # swapped pair would move the AUROC by 1 / (n_pos * n_neg) ~ 3e-4
    assert M.pixel_auroc(masks, maps) == pytest.approx(
        roc_auc_score(flat_y, flat_s), abs=1e-7
    )
    fpr, tpr = M.roc_curve(flat_y, flat_s, max_points=None)
    sf, st, _ = sk_roc(flat_y, flat_s, drop_intermediate=False)
    # the same integer counts / the same total: exact
    assert np.allclose(fpr, sf) and np.allclose(tpr, st)
    with pytest.raises(ValueError, match="does not match|has shape"):
        M.pixel_auroc([np.zeros((3, 3), bool)], [np.zeros((4, 4))])


def test_per_image_pixel_auroc_ignores_scale_across_images():
    rng = np.random.default_rng(2)
    masks = [rng.random((6, 7)) > 0.6 for _ in range(3)] + [
        np.zeros((5, 5), bool),
        np.ones((4, 4), bool),
    ]
    maps = [m * 0.5 + rng.random(m.shape) for m in masks]
    got = M.per_image_pixel_auroc(masks, maps)
    for i in range(3):
        # as in test_pixel_auroc_and_roc_curve: same ranks, sklearn's trapezoid
        # ~1e-14 off, a swap ~1e-3
        assert got[i] == pytest.approx(
            roc_auc_score(masks[i].ravel(), maps[i].ravel()), abs=1e-7
        )
    # nothing to rank in an all-good or all-defect image
    assert np.isnan(got[3]) and np.isnan(got[4])
    # a per-image offset changes the pooled number only
    shifted = [a + 10 * i for i, a in enumerate(maps)]
    # same ranks: same bits
    assert np.array_equal(M.per_image_pixel_auroc(masks, shifted)[:3], got[:3])
    assert M.pixel_auroc(masks[:3], shifted[:3]) != pytest.approx(
        M.pixel_auroc(masks[:3], maps[:3])
    )
    with pytest.raises(ValueError, match="has shape"):
        M.per_image_pixel_auroc([np.zeros((3, 3), bool)], [np.zeros((4, 4))])


def test_pro_hand_made():
    # one image, two defect regions of 2 and 4 pixels, 10 defect-free pixels.
    mask = np.zeros((4, 4), bool)
    mask[0, 0:2] = True  # region A: 2 pixels
    mask[2:4, 2:4] = True  # region B: 4 pixels
    amap = np.zeros((4, 4))
    amap[0, 0] = 0.9  # half of A above 0.5
    amap[2:4, 2:4] = 0.8  # all of B
    amap[3, 0] = 0.7  # one false positive
    fpr, pro = M.pro_curve([mask], [amap])
    # thresholds 0.9, 0.8, 0.7, 0: PRO = (0.5+0)/2, (0.5+1)/2, same, 1 ;
    # FPR = 0, 0, 0.1, 1
    # counts / 10 and sums of 1/2, 1/4 (exact in binary): one correctly
    # rounded division at most
    assert np.allclose(fpr, [0, 0, 0, 0.1, 1.0])
    assert np.allclose(pro, [0, 0.25, 0.75, 0.75, 1.0])
    # area up to FPR 0.3: 0.75 from 0 to 0.1 plus
    # interpolation 0.75 -> (0.75 + 0.25*(0.2/0.9)) at 0.3
    y03 = 0.75 + 0.25 * 0.2 / 0.9
    expected = (0.1 * 0.75 + 0.2 * (0.75 + y03) / 2) / 0.3
    # float64, ~10 operations: ~1e-15
    assert M.pro_score([mask], [amap]) == pytest.approx(expected)
    perfect = mask.astype(float)
    assert M.pro_score([mask], [perfect]) == pytest.approx(1.0)


def test_thresholds_and_normalisation():
    y = np.array([0, 0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.35, 0.3, 0.8, 0.4, 0.9])
    t, f1 = M.best_f1_threshold(y, s)
    best = max(f1_score(y, s >= c) for c in s)
    # F1 = 2tp / (tp + fp + P) of small integers in
    # float64 on both sides: a few roundings, ~1e-16
    assert f1 == pytest.approx(best) and f1_score(y, s >= t) == pytest.approx(
        best
    )
    good = np.arange(101, dtype=float)
    # index 0.99 * 100: 99 to ~1 ulp
    assert M.percentile_threshold(good, 99) == pytest.approx(99.0)
    r = M.rates_per_100(y, s, 0.5)
    # 100 * (1 / 3) vs 100 / 3: one ulp apart
    # (7e-15); 0 of 4 good parts flagged is exactly 0
    assert r == {
        "misses_per_100_defective": pytest.approx(100 / 3),
        "false_alarms_per_100_good": 0.0,
    }
    z = M.normalise_scores([50.0, 99.0], good, 99)
    assert np.allclose(z, [0.0, 1.0])  # (50 - 50) / 49, (99 - 50) / 49: ~exact


def test_pixel_metrics_sort_once_and_match_the_rank_sum_exactly():
    """The grouped (sort-once) pixel AUROC is integer arithmetic: the same bits
    as the rank-sum AUROC."""
    rng = np.random.default_rng(4)
    masks = [rng.random((9, 13)) < 0.2 for _ in range(5)]
    # many ties
    maps = [np.round(rng.random((9, 13)) * 8) / 8 + 0.2 * m for m in masks]
    flat_y = np.concatenate([m.ravel() for m in masks])
    flat_s = np.concatenate([a.ravel() for a in maps]).astype(np.float32)
    assert M.pixel_auroc(masks, maps) == M.auroc(flat_y, flat_s)
    auc, pro = M.pixel_metrics(masks, maps, max_fpr=0.3)
    assert auc == M.pixel_auroc(masks, maps) and pro == M.pro_score(
        masks, maps
    )
    fpr, curve = M.pro_curve(masks, maps)
    # every region fully covered
    assert fpr[0] == 0 and fpr[-1] == 1 and curve[-1] == pytest.approx(1.0)
    # one point per distinct score
    assert len(fpr) == len(np.unique(flat_s)) + 1
    bad = [a.copy() for a in maps]
    bad[2][0, 0] = np.nan
    with pytest.raises(ValueError, match="1 of 585 pixel scores are NaN"):
        M.pixel_metrics(masks, bad)


def test_pixel_metrics_of_subsets_equal_each_subset_alone_bit_for_bit():
    """Sorting each block of images once and merging gives every subset the
    numbers that pixel_metrics gives it on its own (==, not approx)."""
    rng = np.random.default_rng(7)
    shapes = [(7, 11), (12, 5), (9, 9), (6, 14), (10, 10), (8, 3)] * 2
    masks = [
        rng.random(s) < (0.3 if i % 3 else 0.0) for i, s in enumerate(shapes)
    ]
    # ties across images (a coarse grid) and one -0.0 among the zeros
    maps = [
        np.round(rng.random(s) * 16) / 16 + 0.3 * m
        for s, m in zip(shapes, masks)
    ]
    maps[4][0, 0] = -0.0
    subsets = {
        "all": np.arange(len(masks)),
        "a": [0, 1, 2, 4, 7],
        "b": [1, 3, 5, 7, 8, 10],
        "one": [2],
    }
    got = M.pixel_metrics_of_subsets(masks, maps, subsets)
    assert list(got) == list(subsets)
    for name, sel in subsets.items():
        want = M.pixel_metrics([masks[i] for i in sel], [maps[i] for i in sel])
        assert got[name] == want, name
    with pytest.raises(ValueError, match="increasing"):
        M.pixel_metrics_of_subsets(masks, maps, {"x": [3, 1]})
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\)"):
        M.pixel_metrics_of_subsets(masks, maps, {"x": [3, 12]})
    with pytest.raises(ValueError, match="PRO needs at least one defect"):
        M.pixel_metrics_of_subsets(masks, maps, {"good": [0, 3]})
