"""Same seed, same numbers: the PatchCore and VAE pipelines run twice, each in
a FRESH Python process, on a small slice of the real data (offline assets, the
book's backbone), and must agree exactly; another seed must give another
coreset and other weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PATCHCORE = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    from helpers.data import load_magnetic_tile
    from helpers.patchcore import PatchCore
    from helpers.patchcore.evaluation import evaluate
    seed = int(sys.argv[1])
    data = load_magnetic_tile(seed=0)
    train = data.train[:6]
    test = data.good_test[:3] + [s for s in data.defect_test if s.defect_type == "Blowhole"][:3]
    model = PatchCore("auto", preprocess="letterbox", image_size=224, coreset_ratio=0.05, k=3, seed=seed,
                      progress=False).fit(train)
    scores, maps = model.predict(test)
    masks = [model.mask_for(s.mask, s.image) for s in test]
    m = evaluate(scores, maps, masks, [s.defect_type for s in test], per_type=False)
    print(json.dumps({"coreset": model.coreset_index.tolist(), "scores": scores.tolist(),
                      "maps": hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in maps)).hexdigest(),
                      "metrics": m, "backbone": model.backbone_description}))
""")

VAE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from helpers.data import load_mnist
    from helpers.vae import crops, experiment
    seed = int(sys.argv[1])
    x, y = load_mnist("train")
    xt, yt = load_mnist("test")
    kept = []
    rows = experiment.run_ablation(crops.to_unit(x[y == 1]), crops.to_unit(xt[yt == 1][:12]),
                                   crops.to_unit(xt[yt == 9][:12]), n_crops=2_000, epochs=1, batch_size=64,
                                   seeds=[seed], progress=False, keep_models=kept)
    weights = [w.tolist() for w in kept[0].model.get_weights()[:2]]
    print(json.dumps({"auroc": [(r["score"], r["image"], r["auroc"]) for r in rows],
                      "loss": kept[0].history["loss"], "weights": weights}))
""")


def _run(script: str, seed: int) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("VAD_MODEL_CACHE", None)  # really train, twice
    out = subprocess.run(
        [sys.executable, "-c", script, str(seed)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name,script", [("patchcore", PATCHCORE), ("vae", VAE)]
)
def test_pipeline_is_deterministic_across_processes_and_seed_matters(
    name, script
):
    first, second, other = _run(script, 0), _run(script, 0), _run(script, 1)
    assert first == second, f"{name}: two runs with seed 0 differ"
    if name == "patchcore":
        assert first["coreset"] != other["coreset"], (
            "a different seed must give a different coreset"
        )
        assert len(first["coreset"]) == len(set(first["coreset"]))
    else:
        assert first["weights"] != other["weights"], (
            "a different seed must give different weights"
        )
