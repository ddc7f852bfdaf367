"""``lora-rffi enroll``, ``authenticate`` and ``rogue`` end to end on a tiny simulated fleet and an extractor
trained a few epochs with ``--objective triplet``: weights untouched by enrollment, re-enrollment, the JSON
contract (single-packet figures always, fused ones beside them), the figures against the per-packet lines and
the file's labels, the audit log from two processes at once, a registry of another model refused, recordings,
and one error line with exit code 2 for bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from support import json_lines, one_error_line

from lorarffi.cli import main
from lorarffi.errors import ConfigError
from lorarffi.rffi.registry import Registry

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [
    "--model",
    "rffi_net",
    "--objective",
    "triplet",
    "--batch-size",
    "16",
    "--lr",
    "3e-3",
    "--threads",
    "1",
    "--members",
    "1",
]
N_TEST = 20  # packets per device in test.h5


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> pathlib.Path:
    """train.h5 (session 1, 40 packets) and test.h5 (session 2, 20 packets) of devices 1-12; models trained on
    devices 1-6 (``model``: 4 epochs; ``other``: another seed, 1 epoch)."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("fleet")
    common = ["-q", "simulate", "--devices", "12", "--spread", "3", "--seed", "0"]
    assert main([*common, "--packets", "40", "--session", "1", "--out", str(d / "train.h5")]) == 0
    test = ["--packets", str(N_TEST), "--session", "2", "--multipath", "--out", str(d / "test.h5")]
    assert main([*common, *test]) == 0
    for name, seed, epochs in (("model", "2", "4"), ("other", "5", "1")):
        args = [
            "-q",
            "train",
            str(d / "train.h5"),
            "--devices",
            "1-6",
            "--out",
            str(d / name),
            "--seed",
            seed,
        ]
        assert main([*args, "--epochs", epochs, "--no-progress", *TRAIN]) == 0
    return d


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




def _enroll_args(fleet: pathlib.Path, reg: pathlib.Path) -> list[str]:
    """``enroll`` of the fleet's devices 7-10 (not trained on) from its training file into ``reg``."""
    model, data = str(fleet / "model"), str(fleet / "train.h5")
    return ["enroll", model, data, "--registry", str(reg), "--devices", "7-10"]


@pytest.fixture()
def registry(fleet, tmp_path) -> pathlib.Path:
    reg = tmp_path / "fleet.db"
    args = _enroll_args(fleet, reg)
    assert main([*args, "--packets", "0:30", "--json"]) == 0
    return reg


def test_enrollment_leaves_the_weights_unchanged_and_stores_each_device(fleet, tmp_path, capsys) -> None:
    weights = fleet / "model" / "weights.safetensors"
    before = _sha256(weights)
    reg = tmp_path / "fleet.db"
    args = _enroll_args(fleet, reg)
    assert main([*args, "--packets", "0:30", "--json"]) == 0
    doc = json_lines(capsys)[0]
    assert _sha256(weights) == before and doc["model_fingerprint"] == f"sha256:{before}"
    assert [(d["device_id"], d["n_packets"], d["n_embeddings"]) for d in doc["devices"]] == [
        (i, 30, 30) for i in range(7, 11)
    ]
    with Registry.open(reg) as r:
        assert r.model_fingerprint == f"sha256:{before}" and r.embedding_dim == 128
        assert all(
            d.cfo_std_hz is not None and d.cfo_min_hz <= d.cfo_mean_hz <= d.cfo_max_hz for d in r.devices()
        )
    # enrolling again updates the device: fewer packets, a name
    one = [
        "enroll",
        str(fleet / "model"),
        str(fleet / "train.h5"),
        "--registry",
        str(reg),
        "--device-id",
        "8",
    ]
    assert main([*one, "--name", "pump", "--packets", "0:10"]) == 0
    capsys.readouterr()
    with Registry.open(reg) as r:
        dev = r.device(8)
        assert (dev.name, dev.n_packets, dev.n_embeddings, len(r.devices())) == ("pump", 10, 10, 4)
    assert _sha256(weights) == before


def _authenticate(fleet, reg, capsys, *extra: str) -> tuple[list[dict], dict]:
    args = ["authenticate", str(fleet / "model"), str(fleet / "test.h5"), "--registry", str(reg)]
    assert main([*args, "--devices", "7-12", "--json", *extra]) == 0
    lines = json_lines(capsys)
    return lines[:-1], lines[-1]


def test_authenticate_json_single_packet_figures_with_fused_ones_beside_them(fleet, registry, capsys) -> None:
    packets, summary = _authenticate(fleet, registry, capsys, "--far", "0.05")
    n = 6 * N_TEST
    assert len(packets) == n and summary["type"] == "summary" and summary["n_packets"] == n
    assert {
        "type",
        "packet",
        "true_device",
        "decision",
        "verdict",
        "nearest_device",
        "score",
        "cfo_hz",
    } <= set(packets[0])
    truth = np.array([p["true_device"] for p in packets])
    decision = [p["decision"] for p in packets]
    legit = np.isin(truth, [7, 8, 9, 10])
    assert summary["n_enrolled_packets"] == 4 * N_TEST and summary["n_unenrolled_packets"] == 2 * N_TEST
    assert summary["accuracy"] == pytest.approx(
        np.mean([decision[i] == truth[i] for i in np.flatnonzero(legit)])
    )
    assert summary["rogue_rate"] == pytest.approx(
        np.mean([decision[i] == "rogue" for i in np.flatnonzero(~legit)])
    )
    for p in packets:
        accepted = p["decision"] != "rogue"
        assert (p["verdict"] == "accept") == accepted and (p["device"] == p["decision"] if accepted else True)
        assert accepted == (p["score"] <= summary["threshold"]["value"] and p["cfo_ok"] and p["iq_ok"])
    t = summary["threshold"]
    assert t["far"] == 0.05 and t["k"] == 15 and "leave-one-device-out" in t["method"]
    assert t["score"] == "knn"
    assert "fused_accuracy" not in summary
    with Registry.open(registry) as r:
        assert len(r.audit()) == n
    # M = 5: the single-packet figures are the same, the fused ones are beside them
    packets5, summary5 = _authenticate(fleet, registry, capsys, "--packets-per-decision", "5")
    for key in ("n_packets", "accuracy", "rogue_rate", "false_reject_rate"):
        assert summary5[key] == summary[key]
    assert [p["decision"] for p in packets5] == decision
    assert summary5["packets_per_decision"] == 5 and summary5["fused_n_decisions"] == n // 5
    assert {"fused_accuracy", "fused_rogue_rate", "fused_false_reject_rate", "fused_threshold"} <= set(
        summary5
    )
    groups: dict[int, list[dict]] = {}
    for p in packets5:
        groups.setdefault(p["fused_group"], []).append(p)
    assert all(len(g) == 5 and len({p["true_device"] for p in g}) == 1 for g in groups.values())
    fused_ok = [
        g[0]["fused_decision"] == g[0]["true_device"] for g in groups.values() if g[0]["true_device"] <= 10
    ]
    assert summary5["fused_accuracy"] == pytest.approx(np.mean(fused_ok))
    with Registry.open(registry) as r:
        rows = r.audit()
        assert len(rows) == n + n + n // 5 and rows[-1].source.endswith("[fused 5]")


def test_a_registry_of_another_model_is_refused_in_one_line(fleet, registry, capsys) -> None:
    args = [str(fleet / "other"), str(fleet / "test.h5"), "--registry", str(registry)]
    assert main(["authenticate", *args]) == 2
    one_error_line(capsys, str(registry), "enrolled with model")
    assert main(["enroll", *args]) == 2
    one_error_line(capsys, str(registry), "enrolled with model")


def test_two_processes_authenticating_into_one_registry_lose_no_audit_rows(fleet, registry) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "lorarffi.cli",
        "-q",
        "authenticate",
        str(fleet / "model"),
        str(fleet / "test.h5"),
        "--registry",
        str(registry),
        "--far",
        "0.05",
        "--json",
    ]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    n = 12 * N_TEST
    assert all(len(o[0].decode().strip().splitlines()) == n + 1 for o in outs)
    with Registry.open(registry) as r:
        rows = r.audit()
    assert len(rows) == 2 * n and len({r.audit_id for r in rows}) == 2 * n


def test_recordings_are_detected_first(fleet, tmp_path, capsys) -> None:
    rec = tmp_path / "stream.sigmf-meta"
    sim = ["-q", "simulate", "--stream", str(rec), "--devices", "3", "--rogues", "1", "--duration-s", "3"]
    assert main([*sim, "--seed", "1", "--spread", "3"]) == 0
    capsys.readouterr()
    assert main(["detect", str(rec), "--json"]) == 0
    detected = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    n_detected = sum(d["type"] == "packet" for d in detected)  # the packet records, then the summary
    assert n_detected > 4
    reg = tmp_path / "rec.db"
    base = [str(fleet / "model"), str(rec), "--registry", str(reg)]
    assert main(["enroll", *base]) == 2
    one_error_line(capsys, "recording", "--device-id")
    assert main(["enroll", *base, "--device-id", "31", "--name", "gate", "--json"]) == 0
    (dev,) = json_lines(capsys)[0]["devices"]
    assert (dev["device_id"], dev["name"], dev["n_packets"]) == (31, "gate", n_detected)
    assert main(["enroll", *base, "--device-id", "32", "--packets", "0:4"]) == 0
    capsys.readouterr()
    assert main(["authenticate", *base, "--json"]) == 0
    lines = json_lines(capsys)
    assert len(lines) == n_detected + 1
    # the annotations label the packets (device ids 1-3, rogue -1): every annotated packet was detected, so
    # the labels are the annotations' own, and none of them is enrolled here
    assert all(p["start_sample"] >= 0 and p["snr_db"] is not None for p in lines[:-1])
    meta = json.loads(rec.read_text())
    anns = sorted(meta["annotations"], key=lambda a: a["core:sample_start"])
    want = [-1 if a["core:label"] == "rogue" else int(a["core:label"]) for a in anns]
    assert len(want) == n_detected and [p["true_device"] for p in lines[:-1]] == want  # both in time order
    starts = np.array([p["start_sample"] for p in lines[:-1]])
    truth_starts = np.array([a["core:sample_start"] for a in anns])
    assert np.all(np.abs(starts - truth_starts) <= 1)  # the detector's start: within one sample
    assert lines[-1]["n_unenrolled_packets"] == n_detected and lines[-1]["accuracy"] is None


def test_the_cohort_score_is_an_option(fleet, registry, capsys) -> None:
    """The default score (knn) is d1, the distance to the nearest device; --score cohort is
    d1 / sqrt(min(d2, sqrt 2)) with the runner-up's d2 >= d1, so it lies between d1 / 2**(1/4) and
    max(sqrt(d1), d1 / 2**(1/4)); the nearest device is the same, and each score gets a threshold of its
    own."""
    knn, s_knn = _authenticate(fleet, registry, capsys, "--far", "0.05")
    cohort, s_cohort = _authenticate(fleet, registry, capsys, "--far", "0.05", "--score", "cohort")
    assert s_knn["threshold"]["score"] == "knn" and s_cohort["threshold"]["score"] == "cohort"
    assert s_knn["threshold"]["value"] != s_cohort["threshold"]["value"]
    assert [p["nearest_device"] for p in knn] == [p["nearest_device"] for p in cohort]
    d1 = np.array([p["score"] for p in knn])
    s = np.array([p["score"] for p in cohort])
    # both runs embed the same packets in the same batches: the same float32 distances, then a float64
    # division and square root apart
    tol = 1e-12
    assert np.all(s >= d1 / 2**0.25 - tol) and np.all(s <= np.maximum(np.sqrt(d1), d1 / 2**0.25) + tol)
    with Registry.open(registry) as r:
        assert r.threshold.score == "cohort"  # the last one chosen is stored


def test_rogue_command_reports_roc_figures_and_a_plot(fleet, tmp_path, capsys) -> None:
    args = ["rogue", str(fleet / "model"), "--enroll", str(fleet / "train.h5"), "--devices", "7-10"]
    args += ["--legit", str(fleet / "test.h5"), "--rogue", str(fleet / "test.h5"), "--rogue-devices", "11-12"]
    assert main([*args, "--json", "--plots", str(tmp_path / "plots")]) == 0
    doc = json_lines(capsys)[0]
    assert {"auc", "eer", "threshold", "frr", "far", "n_legit", "n_rogue"} <= set(doc)
    assert doc["score"] == "knn"
    assert (doc["n_legit"], doc["n_rogue"], doc["far"]) == (4 * N_TEST, 2 * N_TEST, 0.01)
    assert 0.0 <= doc["auc"] <= 1.0 and 0.0 <= doc["eer"] <= 1.0 and doc["far_measured"] <= 0.01
    assert pathlib.Path(doc["plots"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args[:-2], "--rogue-devices", "9-12"]) == 2  # a rogue that is enrolled
    one_error_line(capsys, "devices 9-10 ", "enrolled")


def test_bad_input_is_one_line_and_exit_code_2(fleet, tmp_path, capsys) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00not a database" * 100)
    args = [str(fleet / "model"), str(fleet / "test.h5"), "--registry", str(junk)]
    assert main(["authenticate", *args]) == 2
    one_error_line(capsys, str(junk))
    assert main(["enroll", *args, "--name", "x"]) == 2
    one_error_line(capsys, "--name", "--device-id")
    assert main(["authenticate", *args[:2], "--registry", str(tmp_path / "missing.db")]) == 2
    one_error_line(capsys, "missing.db", "no such registry")


def test_whole_packet_rows_are_read_whole_with_whole_packets(fleet, registry, tmp_path, capsys) -> None:
    """A dataset whose rows go on past the preamble is authenticated on every up-chirp of each packet with
    ``--whole-packets``; without, on the preamble alone, as a file of preambles is either way."""
    import h5py

    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.dsp.packet_symbol import packet_tail_samples

    whole = tmp_path / "whole.h5"
    common = ["-q", "simulate", "--devices", "12", "--spread", "3", "--seed", "0", "--session", "2"]
    assert main([*common, "--packets", "8", "--payload-symbols", "12", "--out", str(whole)]) == 0
    capsys.readouterr()
    cfg = LoRaConfig()
    with h5py.File(whole) as f:
        assert f["preambles"].shape[1] == cfg.preamble_samples + packet_tail_samples(cfg, 12)

    def scores(path, *extra):
        args = ["authenticate", str(fleet / "model"), str(path), "--registry", str(registry)]
        assert main([*args, "--devices", "7-12", "--json", *extra]) == 0
        return np.array([p["score"] for p in json_lines(capsys)[:-1]])

    packets, preamble_only = scores(whole, "--whole-packets"), scores(whole)
    assert packets.shape == preamble_only.shape == (6 * 8,)
    assert np.all(packets != preamble_only)  # every packet read differently
    plain = fleet / "test.h5"  # rows of the preamble alone: the flag changes nothing
    np.testing.assert_array_equal(scores(plain), scores(plain, "--whole-packets"))


def test_a_recordings_packets_are_read_whole_up_to_their_end(fleet, tmp_path, capsys) -> None:
    """Each detected packet's fingerprint takes its sync word and every header/payload symbol the simulator
    sent (its annotation says how many) that the recording holds, none past its end; without
    ``--whole-packets`` the detector's preambles are used, and a recording read whole scores differently."""
    from lorarffi.cli.inputs import WHOLE_PACKET_SYMBOLS, _whole_packets
    from lorarffi.datasets.recording import open_recording
    from lorarffi.dsp import detect
    from lorarffi.dsp.cfo import compensate_cfo
    from lorarffi.dsp.normalize import rms_normalize
    from lorarffi.rffi.embedding import load_embedder

    rec_path = tmp_path / "stream.sigmf-meta"
    sim = ["-q", "simulate", "--stream", str(rec_path), "--n-devices", "3", "--duration-s", "3"]
    assert main([*sim, "--seed", "1", "--spread", "3", "--snr-db", "10:20"]) == 0
    capsys.readouterr()
    emb = load_embedder(fleet / "model")
    with open_recording(str(rec_path)) as rec:
        n_samples = rec.n_samples
        packets = detect(rec.read(0, n_samples), emb.lora)
        preambles = emb.packet_preambles(packets)
        rows, n_symbols = _whole_packets(rec, packets, preambles, emb, source="test")
        # a selection of the packets still ends each one at the next detected packet's start
        sps = emb.lora.samples_per_symbol
        p0 = packets[0].fingerprint_start
        _, cut = _whole_packets(rec, packets[:1], preambles[:1], emb, source="test",
                                detected_starts=[p0, p0 + int((8 + 4.25 + 5) * sps) + sps // 2])
        assert cut.tolist() == [8 + 2 + 5]
        # the windows read again are the detector's: the same samples, CFO removed, unit RMS (float32
        # rounding of values about 1 through a few operations: well under 1e-5)
        for p, pre in zip(packets, preambles, strict=True):
            x = rec.read(p.fingerprint_start, emb.lora.preamble_samples)
            again = rms_normalize(compensate_cfo(x, p.cfo_hz, emb.lora.fs_hz))
            assert np.max(np.abs(again - pre)) < 1e-5
    anns = sorted(json.loads(rec_path.read_text())["annotations"], key=lambda a: a["core:sample_start"])
    assert len(anns) == len(packets) > 4
    sent = np.array([a["lorarffi:n_payload_symbols"] for a in anns])
    payload_start = np.array([a["core:sample_start"] for a in anns]) + int((8 + 4.25) * sps)
    held = (n_samples - payload_start) // sps  # the last packet may run past the recording's end
    assert np.any(held < sent)
    np.testing.assert_array_equal(n_symbols, 8 + 2 + np.minimum(np.minimum(sent, held), WHOLE_PACKET_SYMBOLS))
    assert rows.shape == preambles.shape and np.all(np.any(rows != preambles, axis=1))

    reg = tmp_path / "rec.db"
    base = [str(fleet / "model"), str(rec_path), "--registry", str(reg)]
    assert main(["enroll", *base, "--device-id", "31", "--packets", "0:3"]) == 0
    assert main(["enroll", *base, "--device-id", "32", "--packets", "3:6"]) == 0
    capsys.readouterr()

    def scores(*extra):
        assert main(["authenticate", *base, "--json", *extra]) == 0
        return np.array([p["score"] for p in json_lines(capsys)[:-1]])

    whole, alone = scores("--whole-packets"), scores()
    assert whole.shape == alone.shape == (len(packets),) and np.all(whole != alone)


def test_a_registry_records_how_its_packets_were_read_and_warns_of_the_other_way(
    fleet, registry, tmp_path, capsys, caplog
) -> None:
    """Enrolled from preambles, a registry says so; packets read whole against it get one warning line (its
    threshold fits fingerprints of another noise level), packets read as enrolled none; enrolling whole
    packets too makes it ``mixed``, which an export carries to the registry it is imported into."""
    from lorarffi.rffi.registry import export_registry, import_registry

    with Registry.open(registry) as r:
        assert r.packet_input == "preamble"
    assert main(["registry", "list", str(registry), "--json"]) == 0
    assert json_lines(capsys)[0]["packet_input"] == "preamble"

    whole = tmp_path / "whole.h5"
    common = ["-q", "simulate", "--n-devices", "12", "--spread", "3", "--seed", "0", "--session", "2"]
    assert main([*common, "--packets", "4", "--payload-symbols", "12", "--out", str(whole)]) == 0
    capsys.readouterr()

    def authenticate(path, *extra) -> str:
        caplog.clear()
        args = ["authenticate", str(fleet / "model"), str(path), "--registry", str(registry), "--json"]
        assert main([*args, "--devices", "7-8", *extra]) == 0
        capsys.readouterr()
        return "\n".join(r.getMessage() for r in caplog.records)

    err = authenticate(whole, "--whole-packets")
    warned = [line for line in err.splitlines() if "were enrolled from their preamble alone" in line]
    assert len(warned) == 1 and "read from whole packets" in warned[0]
    assert "were enrolled from" not in authenticate(whole)  # read as enrolled
    assert "were enrolled from" not in authenticate(fleet / "test.h5", "--whole-packets")  # preamble rows

    enroll = ["enroll", str(fleet / "model"), str(whole), "--registry", str(registry), "--devices", "11"]
    caplog.clear()
    assert main([*enroll, "--whole-packets"]) == 0
    mixed = "enrolled from preambles alone and from whole packets"
    assert any(mixed in r.getMessage() for r in caplog.records)
    with Registry.open(registry) as r:
        assert r.packet_input == "mixed"
        exported = export_registry(r, tmp_path / "fleet.lrreg")
    copy = tmp_path / "copy.db"
    import_registry(exported, copy)
    with Registry.open(copy) as r:
        assert r.packet_input == "mixed"
        with pytest.raises(ConfigError, match="packet_input"):
            r.record_packet_input("payload")


@pytest.mark.parametrize(
    "compensation, fs_hz, model_fs_hz, reason",
    [
        (False, 1e6, 1e6, "a model that removes the CFO"),
        (True, 2e6, 1e6, "packets at the model's 1e+06 Hz (these are at 2e+06 Hz)"),
        (True, 1.1e6, 1.1e6, "an integer number of samples per chip"),
        (True, 1e6, 1e6, None),
    ],
)
def test_whole_packets_fall_back_to_the_preamble_in_one_warning(caplog, compensation, fs_hz, model_fs_hz,
                                                                 reason) -> None:
    """``--whole-packets`` where packets cannot be read whole (a model that keeps the CFO, another sample
    rate, a fractional number of samples per chip) reads preambles alone and says why in one line."""
    from types import SimpleNamespace

    from lorarffi.cli.inputs import _can_read_whole
    from lorarffi.dsp.config import LoRaConfig

    emb = SimpleNamespace(config=SimpleNamespace(cfo_compensation=compensation),
                          lora=LoRaConfig(fs_hz=model_fs_hz))
    caplog.clear()
    assert _can_read_whole(emb, fs_hz, "in.h5") is (reason is None)
    lines = [r.getMessage() for r in caplog.records]
    if reason is None:
        assert lines == []
    else:
        assert len(lines) == 1 and reason in lines[0]
        assert lines[0].startswith("in.h5: --whole-packets: packets read by their preamble alone")
