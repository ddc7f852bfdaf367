"""``lora-rffi train`` / ``evaluate`` / ``export-onnx`` in-process: outputs, JSON, plots, errors (exit 2)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from lorarffi.cli import main
from lorarffi.datasets.native import PreambleWriter
from lorarffi.dsp.config import LoRaConfig
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

CFG = LoRaConfig()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    fleet = make_fleet(4, seed=9, spread=5.0)  # devices 1-4
    extra = make_fleet(1, seed=9, spread=5.0, first_device=5)  # a device the model never sees
    tr = simulate_preamble_set(
        fleet,
        CFG,
        30,
        session=Session(day=1, minutes_since_power_on=20),
        rng=np.random.default_rng(1),
        snr_db=(20, 30),
    )
    te = simulate_preamble_set(
        fleet + extra,
        CFG,
        15,
        session=Session(day=1, minutes_since_power_on=40),
        rng=np.random.default_rng(2),
        snr_db=(20, 30),
    )
    for name, ps in (("train.h5", tr), ("test.h5", te)):
        with PreambleWriter(d / name, CFG, source="test") as w:
            w.append(ps.preambles, ps.device_ids, cfo_hz=ps.cfo_hz)
    return d


def test_train_then_evaluate_then_export(files: pathlib.Path, capsys) -> None:
    model = files / "model"
    rc = main(
        [
            "-q",
            "train",
            str(files / "train.h5"),
            "--out",
            str(model),
            "--model",
            "rffi_net",
            "--epochs",
            "6",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--devices",
            "1-4",
            "--packets",
            "0:30",
            "--seed",
            "2",
            "--no-progress",
            "--augment",
            "awgn",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 6 and summary["model_dir"] == str(model)
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["training"]["data"]["devices"] == [1, 2, 3, 4] and cfg["training"]["augment"] == ["awgn"]

    rc = main(
        ["-q", "evaluate", str(model), str(files / "test.h5"), "--json", "--plots", str(files / "plots")]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy_cnn", "accuracy_hybrid", "n_packets", "rejected"} <= set(out)
    assert out["n_packets"] == 60 and out["unknown_devices"] == [5] and out["n_unknown_device_packets"] == 15
    assert out["accuracy_hybrid"] >= 0.7 and 0 <= out["rejected"] <= 60
    assert len(out["per_device"]) == 4 and all(0 <= d["recall_cnn"] <= 1 for d in out["per_device"])
    for png in ("confusion_cnn.png", "confusion_hybrid.png", "cfo_per_device.png"):
        assert (files / "plots" / png).stat().st_size > 1000

    rc = main(["-q", "evaluate", str(model), str(files / "test.h5"), "--devices", "1-2", "--packets", "0:5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "packets 10" in text and "accuracy CNN" in text

    rc = main(["-q", "export-onnx", str(model)])
    assert rc == 0 and (model / "model.onnx").stat().st_size > 1000


def test_resume_continues_an_interrupted_run(files: pathlib.Path, capsys) -> None:
    model = files / "resumed"
    base = [
        "-q",
        "train",
        str(files / "train.h5"),
        "--out",
        str(model),
        "--model",
        "rffi_net",
        "--batch-size",
        "32",
        "--no-progress",
    ]
    gate = ["--cfo-margin-hz", "700", "--cfo-weight-std-hz", "0"]
    assert main(base + ["--epochs", "1"] + gate) == 0
    # Resuming with other settings would silently mix two runs: refused, naming what changed.
    assert main(base + ["--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume: settings differ" in err[0] and "gate:" in err[0]
    assert main(base + ["--epochs", "2", "--resume"] + gate) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 2
    params = json.loads((model / "config.json").read_text())["hybrid"]["params"]
    assert params["margin_hz"] == 700 and params["cfo_weighting"] is False  # 0 = Algorithm 1, saved


def test_errors_are_one_line_and_exit_2(files: pathlib.Path, tmp_path: pathlib.Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nomodel"), str(files / "test.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a model directory" in err[0]
    assert (
        main(
            [
                "train",
                str(files / "train.h5"),
                "--out",
                str(tmp_path / "m"),
                "--model",
                "nope",
                "--epochs",
                "1",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "model='nope' is not registered" in capsys.readouterr().err
    assert main(["train", str(files / "train.h5"), "--out", str(tmp_path / "m"), "--augment", "rain"]) == 2
    assert "augment=" in capsys.readouterr().err
    assert main(["train", str(files / "train.h5"), "--out", str(tmp_path / "m"), "--devices", "7-9"]) == 2
    assert "lora-rffi: error:" in capsys.readouterr().err
