"""``lora-rffi simulate`` in-process: HDF5 preamble sets and SigMF recordings with ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorarffi.cli import main
from lorarffi.datasets.native import open_preamble_file
from lorarffi.datasets.recording import open_recording
from lorarffi.dsp import LoRaConfig, downchirp
from lorarffi.sim import DeviceProfile, Session, make_fleet, simulate_preamble_set


def test_simulate_writes_a_preamble_set_with_truth(tmp_path, capsys):
    out = tmp_path / "train.h5"
    rc = main(
        [
            "-q",
            "simulate",
            "--devices",
            "3",
            "--packets",
            "4",
            "--out",
            str(out),
            "--seed",
            "5",
            "--snr-db",
            "12:20",
            "--multipath",
            "--first-device",
            "2",
            "--session",
            "2",
        ]
    )
    assert rc == 0
    assert "12 packets of 3 devices" in capsys.readouterr().out
    with open_preamble_file(out) as pf:
        assert pf.cfg == LoRaConfig() and len(pf) == 12
        np.testing.assert_array_equal(pf.device_ids, np.repeat([2, 3, 4], 4))
        meta = pf.meta(np.arange(12))
        assert np.all((meta["snr_db"] >= 12) & (meta["snr_db"] <= 20))
        iq = pf.read_rows(np.arange(4))
        prov = pf.sources[0]["provenance"]
    # the file holds exactly what the library makes for that device, session and seed
    fleet = make_fleet(3, seed=5, first_device=2)
    ps = simulate_preamble_set(
        fleet[:1],
        LoRaConfig(),
        4,
        session=Session(day=2, place=2),
        rng=np.random.default_rng([5, 2, 2]),
        snr_db=(12.0, 20.0),
        multipath=True,
    )
    np.testing.assert_array_equal(iq, ps.preambles)
    np.testing.assert_array_equal(meta["cfo_hz"][:4], ps.cfo_hz)  # float64 on file: the same values
    assert [DeviceProfile.from_dict(d) for d in prov["devices_profiles"]] == fleet


def test_sessions_of_one_seed_share_devices_but_differ(tmp_path):
    a, b = tmp_path / "s1.h5", tmp_path / "s2.h5"
    for path, session in ((a, "1"), (b, "2")):
        assert (
            main(
                [
                    "-q",
                    "simulate",
                    "--devices",
                    "2",
                    "--packets",
                    "3",
                    "--out",
                    str(path),
                    "--seed",
                    "1",
                    "--session",
                    session,
                ]
            )
            == 0
        )
    with open_preamble_file(a) as fa, open_preamble_file(b) as fb:
        assert (
            fa.sources[0]["provenance"]["devices_profiles"] == fb.sources[0]["provenance"]["devices_profiles"]
        )
        assert not np.allclose(fa.meta(np.arange(6))["cfo_hz"], fb.meta(np.arange(6))["cfo_hz"])


def test_simulate_stream_writes_sigmf_with_ground_truth_annotations(tmp_path, capsys):
    meta = tmp_path / "demo.sigmf-meta"
    rc = main(
        [
            "-q",
            "simulate",
            "--stream",
            str(meta),
            "--devices",
            "3",
            "--duration-s",
            "2",
            "--rogues",
            "1",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    assert "2 s" in capsys.readouterr().out
    cfg = LoRaConfig()
    with open_recording(meta) as rec:
        assert rec.fs_hz == 1e6 and rec.n_samples == 2_000_000 and rec.center_freq_hz == 868.1e6
        anns = rec.annotations
        assert len(anns) >= 2
        for a in anns:
            label = a["core:label"]
            assert label == "rogue" if a["lorarffi:is_rogue"] else label == str(a["lorarffi:device_id"])
            start = a["core:sample_start"]
            seg = rec.read(start, cfg.samples_per_symbol).astype(np.complex128)
            seg *= np.exp(-2j * np.pi * a["lorarffi:cfo_hz"] * np.arange(seg.size) / cfg.fs_hz)
            peak = int(np.argmax(np.abs(np.fft.fft(seg * downchirp(cfg)))))
            assert peak in (0, 1, cfg.samples_per_symbol - 1)
    text = meta.read_text()
    assert json.loads(text)["annotations"][0]["core:sample_count"] > 0


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--devices", "2", "--out", "x.h5"], "--packets"),
        (["--devices", "0", "--packets", "3", "--out", "x.h5"], "--n-devices 0"),
        (["--devices", "2", "--stream", "x.sigmf-meta"], "--duration-s"),
        (["--devices", "2", "--packets", "2", "--out", "x.h5", "--spread", "-1"], "spread="),
    ],
)
def test_simulate_bad_arguments_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and err[0].startswith("lora-rffi: error:")


def test_simulate_refuses_to_overwrite_without_flag(tmp_path, capsys):
    out = tmp_path / "x.h5"
    args = ["-q", "simulate", "--devices", "1", "--packets", "1", "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
