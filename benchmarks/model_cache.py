"""A benchmark's cached model (``LORARFFI_BENCH_CACHE``) is reused only if it was trained with the recipe
asked for: a model directory trained another way (another representation, objective, seed, augmentation, ...)
is removed so that the benchmark trains it again instead of reporting the old model under the new recipe."""

from __future__ import annotations

import json
import logging
import pathlib
import shutil

log = logging.getLogger(__name__)

RECIPE_KEYS = (
    "model", "objective", "seed", "optimizer", "lr", "augment", "aug_snr_db", "pseudo_devices", "epochs",
    "max_time_s", "members",
)
"""The ``TrainConfig`` fields a cached model must share with the one asked for (and the representation)."""
SAVED_BEFORE = {"members": 1}
"""What a model saved before a field was recorded was trained with."""


def reuse_cached_model(tc, cfg, out: pathlib.Path) -> bool:
    """True if ``out`` holds a model trained with ``tc`` (a ``TrainConfig``) on LoRa parameters ``cfg``;
    False if it holds none, or held one trained another way (then removed)."""
    from lorarffi.rffi.train import TrainConfig, representation_for

    if not (out / "config.json").exists():
        return False
    saved = json.loads((out / "config.json").read_text())
    training = saved.get("training") or {}
    want = json.loads(json.dumps(tc.to_dict()))
    default = json.loads(json.dumps(TrainConfig(objective=tc.objective).to_dict()))
    same = saved.get("representation") == representation_for(tc.representation, cfg) and all(
        training.get(k, SAVED_BEFORE.get(k, default.get(k))) == want.get(k) for k in RECIPE_KEYS
    )
    if not same:
        log.warning("%s was trained with another recipe: training it again", out)
        shutil.rmtree(out)
    return same
