"""Data-parallel training: 2 CPU processes (gloo, 127.0.0.1) train the model one process trains."""

from __future__ import annotations

import os
import pathlib
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from lorarffi.datasets.simulate import Session, make_fleet, simulate_preamble_set
from lorarffi.dsp.config import LoRaConfig
from lorarffi.rffi.train import TrainConfig, train

CFG = LoRaConfig()
TC = {"epochs": 2, "batch_size": 16, "seed": 11, "lr": 2e-3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, augment: tuple[str, ...]) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        d = np.load(data)
        train(d["iq"], d["ids"], CFG, out, TrainConfig(**TC, augment=augment), device="cpu")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("augment", [(), ("awgn",)])
def test_two_gloo_processes_train_the_same_model_as_one(tmp_path: pathlib.Path, augment) -> None:
    fleet = make_fleet(3, seed=2, spread=3.0)
    ps = simulate_preamble_set(
        fleet,
        CFG,
        22,
        session=Session(day=1, minutes_since_power_on=20),
        rng=np.random.default_rng(0),
        snr_db=(20, 30),
    )
    data = tmp_path / "data.npz"
    np.savez(data, iq=ps.preambles, ids=ps.device_ids)
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path / "ddp"), augment), nprocs=2, join=True)
    single = train(
        ps.preambles, ps.device_ids, CFG, tmp_path / "one", TrainConfig(**TC, augment=augment), device="cpu"
    )
    w_ddp = load_file(str(tmp_path / "ddp" / "weights.safetensors"))
    w_one = load_file(str(tmp_path / "one" / "weights.safetensors"))
    assert w_ddp.keys() == w_one.keys()
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], rtol=2e-4, atol=2e-5, msg=k)
    # Negative control: the weights moved away from their initialisation in both runs.
    init = torch.manual_seed(TC["seed"])  # noqa: F841 (same seed as the trainer's initialisation)
    moved = [k for k in w_one if w_one[k].is_floating_point() and "classifier" in k]
    assert moved and not torch.allclose(w_one[moved[0]], torch.zeros_like(w_one[moved[0]]))
    assert len(single.history) == TC["epochs"]
