"""Peak memory of ``PatchCore.fit``, measured in a fresh process (used by the
benchmark and the tests).

Resident memory (RSS) is read from ``/proc/self/statm`` every 5 ms by a thread
while ``fit`` runs, so the number includes everything: torch's allocator,
NumPy, the images, the features and the coreset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_CHILD = """
import json, os, sys, threading, time
from helpers import assets
from helpers.data import read_image
from helpers.patchcore import PatchCore
n_images, settings = int(sys.argv[1]), json.loads(sys.argv[2])
page = os.sysconf("SC_PAGE_SIZE") / 2**20
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
files = sorted((assets.locate("magnetic-tile") / "MT_Free" / "Imgs").glob("*.jpg"))[:n_images]
if len(files) < n_images:
    sys.exit(f"only {len(files)} defect-free Magnetic Tile images, {n_images} asked for")
imgs = [read_image(f) for f in files]
m = PatchCore(**settings, progress=False)
m.extractor
before = rss(); peak = [before]; done = [False]
def poll():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.005)
th = threading.Thread(target=poll); th.start()
m.fit(imgs)
done[0] = True; th.join()
itemsize = 2 if m.config.fit_dtype == "float16" else 4
print(json.dumps({"n_images": len(imgs), "rss_before_fit_mb": before, "peak_rss_mb": max(peak[0], rss()),
                  "bank_mb": m.bank.numel() * 4 / 2**20,
                  "all_patches_mb": m.fit_info["n_patches"] * m.channels * itemsize / 2**20}))
"""


def fit_memory(n_images: int, settings: dict | None = None) -> dict:
    """Fit on the first ``n_images`` defect-free Magnetic Tile images in a
    child process and return ``rss_before_fit_mb`` (torch, model and images
    loaded), ``peak_rss_mb`` during ``fit``, ``all_patches_mb`` (the stored
    patch features) and ``bank_mb`` (the coreset bank, float32)."""
    settings = dict(settings or {})
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n_images), json.dumps(settings)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode:
        raise RuntimeError(f"the memory probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
