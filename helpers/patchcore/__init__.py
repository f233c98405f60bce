"""PatchCore (Roth et al., CVPR 2022), rebuilt in small modules, one job each.

* :mod:`.features`    - forward hooks, truncated forward, local aggregation, patch reshape
* :mod:`.preprocess`  - images -> tensors (article's centre crop, or aspect-ratio-respecting letterbox)
* :mod:`.sampler`     - random projection (Johnson-Lindenstrauss) and greedy k-center coreset
* :mod:`.scorer`      - exact nearest-neighbour search in batches, the paper's re-weighted score
* :mod:`.anomaly_map` - patch scores -> blurred pixel maps
* :mod:`.metrics`     - image/pixel AUROC, PRO, ROC curves, thresholds
* :mod:`.model`       - the ``PatchCore`` estimator (fit / predict / save / load)
* :mod:`.evaluation`  - metrics of a fitted model, and studies of settings on one pass
* :mod:`.overlay`     - anomaly maps drawn over their image, defect outlined
* :mod:`.inspection`  - your own folders: fit, threshold, heat maps (PNG) and scores (CSV)
* :mod:`.cli`         - the same from the command line (``patchcore-inspect``)
* :mod:`.plots`, :mod:`.report` - the chapters' figures and tables
* :mod:`.reference`   - the article's own code (for comparison only)
"""

from .model import PatchCore, PatchCoreConfig

__all__ = ["PatchCore", "PatchCoreConfig"]
