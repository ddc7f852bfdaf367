"""An extractor made of several training runs: ``TrainConfig(members=N)`` trains N members, member ``i`` with
seed ``seed + i`` in ``MODEL_DIR/members/<i>/`` (each a model directory of its own, resumable), and joins them
into one model directory (:class:`~lorarffi.rffi.models.ensemble.EmbeddingEnsemble`: the members' unit-norm
embeddings side by side over sqrt(N)).

>>> tc = TrainConfig(objective="supcon", members=2)               # doctest: +SKIP
>>> member_config(tc, 1).seed, member_config(tc, 1).members       # doctest: +SKIP
(1, 1)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lorarffi import __version__
from lorarffi.errors import ModelError
from lorarffi.rffi.checkpoint import load_model, save_model_dir
from lorarffi.rffi.models.ensemble import ENSEMBLE_MODEL

if TYPE_CHECKING:
    from lorarffi.rffi.train import TrainConfig

__all__ = ["MEMBERS_DIR", "member_config", "member_dir", "combine_members"]

MEMBERS_DIR = "members"
"""Subdirectory of an ensemble's model directory that holds its members' model directories."""
_SAME = (
    "model_name",
    "model_hparams",
    "representation",
    "lora",
    "device_ids",
    "cfo_compensation",
    "data_fingerprint",
)
_BEST_KEYS = ("best_epoch", "best_val_loss", "best_val_acc")


def member_config(tc: TrainConfig, i: int) -> TrainConfig:
    """The training settings of member ``i`` of ``tc``'s ensemble: one network, seed ``tc.seed + i``."""
    return dataclasses.replace(tc, members=1, seed=tc.seed + i)


def member_dir(out: str | os.PathLike, i: int) -> pathlib.Path:
    """Model directory of member ``i`` inside the ensemble's ``out``."""
    return pathlib.Path(out) / MEMBERS_DIR / str(i)


def combine_members(
    member_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, tc: TrainConfig | None = None
) -> pathlib.Path:
    """Join trained members (model directories of one architecture, representation and training devices) into
    the ensemble model directory ``out``.

    Parameters
    ----------
    member_dirs : sequence of path-like
        At least two model directories with an embedding (metric-trained).
    out : path-like
        Model directory to write (weights and config; the members' directories are not touched).
    tc : TrainConfig, optional
        The ensemble's settings, recorded as its ``training`` (default: the first member's, with ``members``
        set); each member's seed and best epoch are recorded under ``member_runs``.

    Raises
    ------
    ModelError
        Fewer than two members, or members that differ in architecture, input or training devices.
    """
    import torch

    dirs = [pathlib.Path(d) for d in member_dirs]
    if len(dirs) < 2:
        raise ModelError(f"an ensemble needs at least two member models, got {len(dirs)}")
    loaded = [load_model(d, torch_device="cpu") for d in dirs]
    first = loaded[0][1]
    for d, (_, c) in zip(dirs[1:], loaded[1:], strict=True):
        differ = [k for k in _SAME if getattr(c, k) != getattr(first, k)]
        if differ:
            raise ModelError(f"{d}: cannot join {dirs[0]} in an ensemble: {', '.join(differ)} differ")
    from lorarffi.rffi.models import build_model

    hparams = {"member": first.model_name, "member_hparams": first.model_hparams, "n_members": len(dirs)}
    model = build_model(ENSEMBLE_MODEL, **hparams)
    with torch.no_grad():
        for slot, (member, _) in zip(model.members, loaded, strict=True):
            slot.load_state_dict(member.state_dict(), strict=True)
    training: dict[str, Any] = {k: v for k, v in first.training.items() if k not in _BEST_KEYS}
    training.update(tc.to_dict() if tc is not None else {"members": len(dirs)})
    training["embedding_dim"] = int(model.embedding_dim)
    training["member_runs"] = [{k: c.training.get(k) for k in ("seed", *_BEST_KEYS)} for _, c in loaded]
    # the members' input, devices, CFO gate and data, with the joined network and settings
    config = dataclasses.replace(
        first,
        model_name=ENSEMBLE_MODEL,
        model_hparams=hparams,
        training=training,
        software_version=__version__,
    )
    return save_model_dir(out, model, config)
