"""Data-parallel training: two gloo processes (127.0.0.1) train on the shards of the global batches one
process trains on, with batch norm over the global batch and the global batch's mean gradient."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from lorarffi.dsp.config import LoRaConfig
from lorarffi.rffi import ddp
from lorarffi.rffi.checkpoint import read_config
from lorarffi.rffi.models.infocom_cnn import InfocomIQCNN
from lorarffi.rffi.train import (
    TrainConfig,
    build_network,
    epoch_batches,
    place_model,
    shard,
    train,
    train_one_epoch,
)
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

CFG = LoRaConfig()
# IQ input (no FFT, whose library each process may choose by timing) to a tiny IQ network.
TC = {
    "epochs": 2,
    "batch_size": 16,
    "seed": 11,
    "lr": 2e-3,
    "model": "infocom_iq_cnn",
    "model_hparams": {"widths": [2, 2, 2], "kernel_len": 8},
    "representation": {"name": "iq", "params": {}},
}


def _store(tmp_path: pathlib.Path) -> str:
    """A fresh file the processes meet through (a file store: no TCP port to pick and release, which another
    test may take in between)."""
    return str(tmp_path / "rendezvous")


def _join(rank: int, world: int, store: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


# -- the recipe's epoch in float64: equal to the single-process epoch up to rounding --

N_PACKETS, BATCH, SHAPE = 40, 8, (12, 10)
HPARAMS = {"n_classes": 3, "input_shape": list(SHAPE), "in_channels": 1}


def _float64_epoch(rank: int, world_size: int, *, global_batch_norm: bool = True) -> dict[str, np.ndarray]:
    """One epoch of the recipe (placement, global batches, shards, steps) on fixed float64 data with SGD; the
    model's state after it. ``global_batch_norm=False`` wraps the model without the recipe's placement."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_PACKETS, 1, *SHAPE))
    y = rng.integers(0, 3, N_PACKETS)
    model = build_network("infocom_cnn", HPARAMS, seed=5).double()
    if global_batch_norm:
        train_model = place_model(model, torch.device("cpu"), world_size)
    else:  # negative control: each process normalises by its own half batch
        train_model = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = epoch_batches(np.arange(N_PACKETS), BATCH, seed=1, epoch=1, world_size=world_size)
    shards = (
        (x[b][shard(b.size, rank, world_size)], y[b][shard(b.size, rank, world_size)], b.size)
        for _, b in batches
    )
    train_one_epoch(train_model, optimizer, shards, torch.device("cpu"), world_size=world_size)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _float64_worker(rank: int, world: int, store: str, out: str) -> None:
    _join(rank, world, store)
    try:
        for global_batch_norm in (True, False):
            state = _float64_epoch(rank, world, global_batch_norm=global_batch_norm)
            if rank == 0:
                np.savez(f"{out}_{global_batch_norm}.npz", **state)
    finally:
        ddp.leave()


def _relative_difference(a, b, init) -> float:
    """||a - b|| / ||b - init|| over every float entry (weights and batch-norm running statistics)."""
    keys = [k for k in b if np.issubdtype(b[k].dtype, np.floating)]
    num = sum(float(np.sum((a[k] - b[k]) ** 2)) for k in keys)
    den = sum(float(np.sum((b[k] - init[k]) ** 2)) for k in keys)
    return (num / den) ** 0.5


@pytest.mark.slow
def test_a_data_parallel_epoch_equals_the_single_process_epoch(tmp_path: pathlib.Path) -> None:
    mp.spawn(_float64_worker, args=(2, _store(tmp_path), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = dict(np.load(tmp_path / "ddp_True.npz"))
    local = dict(np.load(tmp_path / "ddp_False.npz"))
    one = _float64_epoch(0, 1)
    init = {
        k: v.detach().numpy()
        for k, v in build_network("infocom_cnn", HPARAMS, seed=5).double().state_dict().items()
    }
    assert (
        ddp.keys() == one.keys()
        and ddp["features.1.num_batches_tracked"] == one["features.1.num_batches_tracked"] == 5
    )
    # Both runs do the same float64 arithmetic (u = 2^-53 = 1.1e-16) in another order: the all-reduce adds two
    # half-batch sums (batch-norm statistics, gradients) that one process adds in one pass; the loss scales
    # (2/8 then the all-reduce's halving, against 1/8) are powers of two, exact. Reordering a sum of n terms
    # moves it by at most n u times the terms' magnitudes; the longest sums here have 8 x 12 x 10 = 960 terms,
    # 1.1e-13. SGD (lr 0.05, 5 steps of a smooth map) carries such differences on with a bounded gain; the
    # bound 1e-9 of the change in training leaves 10^4 for that gain and for cancellation in the sums.
    assert _relative_difference(ddp, one, init) < 1e-9
    # Negative control: batch norm over each half batch instead of the global batch is far outside the bound.
    assert _relative_difference(local, one, init) > 1e-3


# -- train() under two processes: each trains on its shard of the same global batches --


def _recording_train(iq, ids, out: str, augment: tuple[str, ...]) -> tuple[list[np.ndarray], list[str]]:
    """``train`` with every training-mode input of the network and its batch-norm layers' types recorded."""
    seen: list[np.ndarray] = []
    norms: set[str] = set()

    def record(module, args):
        if isinstance(module, InfocomIQCNN) and module.training:
            seen.append(args[0].detach().numpy().copy())
            norms.update(type(m).__name__ for m in module.modules() if "BatchNorm" in type(m).__name__)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        train(iq, ids, CFG, out, TrainConfig(**TC, augment=augment), torch_device="cpu")
    finally:
        handle.remove()
    return seen, sorted(norms)


def _train_worker(rank: int, world: int, store: str, data: str, out: str, augment: tuple[str, ...]) -> None:
    _join(rank, world, store)
    try:
        d = np.load(data)
        seen, norms = _recording_train(d["iq"], d["ids"], out, augment)
        np.savez(f"{out}_inputs_{rank}.npz", *seen)
        pathlib.Path(f"{out}_norms_{rank}.json").write_text(json.dumps(norms))
    finally:
        ddp.leave()


@pytest.mark.slow
@pytest.mark.parametrize("augment", [(), ("awgn",)])
def test_two_processes_train_on_the_shards_of_the_single_process_batches(
    tmp_path: pathlib.Path, augment
) -> None:
    session, rng = Session(day=1, minutes_since_power_on=20), np.random.default_rng(0)
    ps = simulate_preamble_set(
        make_fleet(3, seed=2, spread=3.0), CFG, 22, session=session, rng=rng, snr_db=(20, 30)
    )
    data = tmp_path / "data.npz"
    np.savez(data, iq=ps.preambles, ids=ps.device_ids)
    out = str(tmp_path / "ddp")
    mp.spawn(_train_worker, args=(2, _store(tmp_path), str(data), out, augment), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same feature code on the same data
    try:
        whole, norms_one = _recording_train(ps.preambles, ps.device_ids, str(tmp_path / "one"), augment)
    finally:
        torch.set_num_threads(threads)
    halves = [list(np.load(f"{out}_inputs_{rank}.npz").values()) for rank in (0, 1)]
    n_train = 3 * (22 - round(0.1 * 22))
    assert len(whole) == len(halves[0]) == len(halves[1]) == TC["epochs"] * (n_train // TC["batch_size"])
    for first, second, batch in zip(*halves, whole, strict=True):
        assert len(first) == len(second) == len(batch) // 2
        # The features of one global batch, computed by the same code from the same packets (and the same
        # augmentation draws) in every process: bit-identical, cut in two. (An FFT-based representation could
        # take another FFT library in another process.)
        np.testing.assert_array_equal(np.concatenate([first, second]), batch)
    assert json.loads(pathlib.Path(f"{out}_norms_0.json").read_text()) == ["GlobalBatchNorm"]
    assert norms_one == ["BatchNorm2d"]
    ddp_cfg, one_cfg = read_config(out), read_config(tmp_path / "one")
    assert ddp_cfg.training["world_size"] == 2 and one_cfg.training["world_size"] == 1
    assert ddp_cfg.hybrid == one_cfg.hybrid and ddp_cfg.data_fingerprint == one_cfg.data_fingerprint


def test_leave_destroys_the_group_once_and_is_a_no_op_without_one(tmp_path: pathlib.Path) -> None:
    ddp.leave()  # no group: nothing to do
    assert not torch.distributed.is_initialized()
    store = f"file://{_store(tmp_path)}"
    torch.distributed.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
        model(torch.ones(1, 2)).sum().backward()  # a reducer and a graph that hold the group
        assert ddp.world() == (0, 1) and torch.distributed.is_initialized()
        ddp.leave()
        assert not torch.distributed.is_initialized() and ddp.world() == (0, 1)
        ddp.leave()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
