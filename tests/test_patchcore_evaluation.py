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
    good = [S(im, np.zeros(im.shape, bool), "Free") for im in toy_images(3, seed=11)]
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
    assert set(ev["per_type"]) == {"Blob", "Other"} and ev["per_type"]["Blob"]["n"] == 2
    assert 0 <= ev["pro"] <= 1 and ev["image_auroc"] == 1.0
    rows = study(train, test, base=settings, feature_variants=[{}],
                 model_variants=[{}, {"k": 1}], backbone=toy_backbone(), batch_size=4, progress=False)
    # study scores the same batches with the same code as predict: equal maps bit for bit (measured 0), and
    # AUROC is exact rank arithmetic; abs 1e-6 would allow ~9 swapped pixel pairs of 1/(720 * 12720) each
    assert rows[0]["image_auroc"] == pytest.approx(ev["image_auroc"])
    assert rows[0]["pixel_auroc"] == pytest.approx(ev["pixel_auroc"], abs=1e-6)
    assert rows[0]["bank_patches"] == rows[1]["bank_patches"]
