"""``lora-rffi classify`` in-process: the same per-packet decisions as ``evaluate`` (closed set) and
``authenticate`` (registry) make, datasets without labels (as ``live --preambles`` stores them), recordings
(detection first), the three output files, the summary against the records, progress never on stdout, and
one error line with exit code 2."""

from __future__ import annotations

import csv
import json
import pathlib

import h5py
import numpy as np
import pytest
import torch
from support import json_lines, one_error_line

from lorarffi.cli import main
from lorarffi.datasets.native import PreambleWriter, load_dataset
from lorarffi.dsp.config import LoRaConfig
from lorarffi.rffi.registry import Registry

N_TEST = 12  # packets per device in test.h5
# A small extractor for 3 epochs, on the folded representation it separates these devices on (this module is
# about classify's records, not about the default representation).
TRAIN = ["--model", "rffi_net", "--objective", "triplet", "--batch-size", "16", "--lr", "3e-3"]
TRAIN += ["--representation", "folded_channel_independent_spectrogram"]
TRAIN += ["--threads", "1", "--members", "1"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> pathlib.Path:
    """train.h5 (session 1, 30 packets) and test.h5 (session 2, N_TEST packets) of devices 1-6; a model
    trained 3 epochs on devices 1-4 (a triplet extractor: it classifies its closed set and embeds)."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("classify")
    common = ["-q", "simulate", "--n-devices", "6", "--spread", "3", "--seed", "0"]
    assert main([*common, "--packets", "30", "--session", "1", "--out", str(d / "train.h5")]) == 0
    assert main([*common, "--packets", str(N_TEST), "--session", "2", "--out", str(d / "test.h5")]) == 0
    args = ["-q", "train", str(d / "train.h5"), "--devices", "1-4", "--out", str(d / "model"), "--seed", "2"]
    assert main([*args, "--epochs", "3", "--no-progress", *TRAIN]) == 0
    return d




def _hybrid_confusion(packets: list[dict], known: list[int]) -> np.ndarray:
    """evaluate's hybrid confusion matrix rebuilt from classify's records: rows the labels the model knows,
    columns its devices then "rejected"."""
    conf = np.zeros((len(known), len(known) + 1), np.int64)
    for p in packets:
        if p["label"] in known:
            col = len(known) if p["device"] is None else known.index(p["device"])
            conf[known.index(p["label"]), col] += 1
    return conf


def test_classify_decides_each_packet_as_evaluate_does(fleet, capsys) -> None:
    from lorarffi.rffi.evaluate import evaluate
    from lorarffi.rffi.inference import load_classifier

    data = str(fleet / "test.h5")
    assert main(["classify", str(fleet / "model"), data, "--json", "--no-progress"]) == 0
    lines = json_lines(capsys)
    packets, summary = lines[:-1], lines[-1]
    n = 6 * N_TEST
    assert len(packets) == n and summary["type"] == "summary" and summary["n_packets"] == n
    assert [p["packet"] for p in packets] == list(range(n))
    # the library's evaluate on a freshly loaded model: the same device for every packet
    iq, ids = load_dataset(fleet / "test.h5")
    _, decision = evaluate(load_classifier(fleet / "model"), iq, ids)
    devices = [-1 if p["device"] is None else p["device"] for p in packets]
    assert devices == decision.device_id.tolist()
    assert [p["verdict"] for p in packets] == decision.verdict
    assert [p["cnn_device"] for p in packets] == decision.cnn_device_id.tolist()
    assert [p["label"] for p in packets] == ids.tolist()
    # and evaluate's command scores exactly these decisions: its hybrid confusion matrix from the records
    assert main(["-q", "evaluate", str(fleet / "model"), data, "--json", "--no-progress"]) == 0
    ev = json.loads(capsys.readouterr().out)
    known = ev["device_ids"]
    conf = _hybrid_confusion(packets, known)
    assert conf.tolist() == ev["confusion_hybrid"]
    # a trained model decides its own devices better than chance (ground truth: the file's labels)
    assert ev["accuracy_hybrid"] > 0.5
    # the summary counts the records
    verdicts = [p["verdict"] for p in packets]
    assert summary["per_verdict"] == {v: verdicts.count(v) for v in sorted(set(verdicts))}
    assert set(verdicts) <= {"accept", "unknown"}
    assert sum(summary["per_device"].values()) == n
    assert summary["rejected"] == sum(p["device"] is None for p in packets)
    assert summary["per_device"].get("none", 0) == summary["rejected"]
    for dev, count in summary["per_device"].items():
        if dev != "none":
            assert count == sum(p["device"] == int(dev) for p in packets)
    assert summary["unsupported"] == 0 and all(p["score"] is None for p in packets)
    assert all(0.0 <= p["confidence"] <= 1.0 for p in packets)


def test_summary_counts_each_device_and_verdict() -> None:
    """Device 0 is a device like any other; -1 is "none" (ground truth: counted by hand)."""
    from lorarffi.rffi.classify import PacketDecisions

    dec = PacketDecisions(
        np.array([0, -1, 3, 0, -1], np.int64),
        ["accept", "unknown", "accept", "accept", "unknown"],
        np.full(5, np.nan),
        np.array([0.9, 0.0, 0.8, 0.7, 0.0], np.float32),
        np.array([10.0, np.nan, -5.0, 12.0, 3.0]),
    )
    s = dec.summary()
    assert s["per_device"] == {"0": 2, "3": 1, "none": 2} and list(s["per_device"]) == ["0", "3", "none"]
    assert s["per_verdict"] == {"accept": 3, "unknown": 2}
    assert (s["n_packets"], s["rejected"], s["unsupported"]) == (5, 2, 1)
    recs = dec.to_records(start_sample=[5, -1, 7, 8, 9], labels=[-1, -1, -1, -1, -1])
    assert [r["device"] for r in recs] == [0, None, 3, 0, None]
    assert [r["start_sample"] for r in recs] == [5, None, 7, 8, 9] and recs[1]["cfo_hz"] is None
    assert recs[0]["snr_db"] is None and recs[0]["score"] is None
    assert recs[0]["confidence"] == pytest.approx(0.9)


def test_evaluate_writes_the_file_classify_writes(fleet, tmp_path, capsys) -> None:
    data = str(fleet / "test.h5")
    assert main(["-q", "classify", str(fleet / "model"), data, "-o", str(tmp_path / "c.csv")]) == 0
    assert capsys.readouterr().out.startswith(f"{6 * N_TEST} packets:")  # the summary alone
    assert main(["-q", "evaluate", str(fleet / "model"), data, "-o", str(tmp_path / "e.csv"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)  # evaluate's own output unchanged by -o
    assert ev["n_packets"] == 4 * N_TEST and "accuracy_hybrid" in ev
    text = (tmp_path / "c.csv").read_text()
    assert text == (tmp_path / "e.csv").read_text() and len(text.splitlines()) == 1 + 6 * N_TEST
    assert main(["evaluate", str(fleet / "model"), data, "-o", str(tmp_path / "e.txt")]) == 2
    one_error_line(capsys, "e.txt")


def test_output_files_hold_every_decision(fleet, tmp_path, capsys) -> None:
    base = ["classify", str(fleet / "model"), str(fleet / "test.h5"), "--devices", "1-3", "--no-progress"]
    assert main([*base, "--json"]) == 0
    want = json_lines(capsys)[:-1]
    n = 3 * N_TEST
    assert len(want) == n
    for suffix in (".csv", ".jsonl", ".h5"):
        out = tmp_path / f"pred{suffix}"
        assert main([*base, "-o", str(out), "--json"]) == 0
        (summary,) = json_lines(capsys)  # with -o: the summary alone on stdout
        assert summary["output"] == str(out) and summary["n_packets"] == n
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            assert rows[-1]["type"] == "summary" and rows[-1]["n_packets"] == n
            got = [{k: v for k, v in r.items() if k != "type"} for r in rows[:-1]]
            assert got == [{k: v for k, v in r.items() if k != "type"} for r in want]
        elif suffix == ".csv":
            with out.open() as f:
                rows = list(csv.DictReader(f))
            assert len(rows) == n
            assert [int(r["device"]) if r["device"] else None for r in rows] == [w["device"] for w in want]
            assert [r["verdict"] for r in rows] == [w["verdict"] for w in want]
            assert [float(r["cfo_hz"]) for r in rows] == [w["cfo_hz"] for w in want]
            assert [int(r["label"]) for r in rows] == [w["label"] for w in want]
        else:
            with h5py.File(out, "r") as f:
                g = f["decisions"]
                assert g["device"].shape == (n,)
                assert g["device"][:].tolist() == [-1 if w["device"] is None else w["device"] for w in want]
                assert [v.decode() for v in g["verdict"][:]] == [w["verdict"] for w in want]
                np.testing.assert_array_equal(g["cfo_hz"][:], [w["cfo_hz"] for w in want])
                assert json.loads(f.attrs["summary"])["n_packets"] == n
    assert main([*base, "-o", str(tmp_path / "pred.txt")]) == 2
    one_error_line(capsys, "pred.txt", ".csv")


def test_unlabelled_preambles_as_live_stores_them(fleet, tmp_path, capsys) -> None:
    """Rows with device id -1 (``live --preambles``): decided, not refused; stored start and SNR reported."""
    iq, ids = load_dataset(fleet / "test.h5", devices=[2, 5])
    start = np.arange(ids.size, dtype=np.int64) * 50_000 + 7
    snr = np.linspace(5.0, 25.0, ids.size)
    live = tmp_path / "live.h5"
    with PreambleWriter(live, LoRaConfig(), source="live") as w:
        w.append(iq, np.full(ids.size, -1), start=start, snr_db=snr)
    assert main(["classify", str(fleet / "model"), str(live), "--json", "--no-progress"]) == 0
    lines = json_lines(capsys)
    packets = lines[:-1]
    assert len(packets) == ids.size and all(p["label"] == -1 for p in packets)
    assert [p["start_sample"] for p in packets] == start.tolist()
    assert [p["snr_db"] for p in packets] == pytest.approx(snr.astype(np.float32).tolist())
    # the same rows labelled: the same decisions (labels never reach the decision)
    labelled = tmp_path / "labelled.h5"
    with PreambleWriter(labelled, LoRaConfig(), source="test") as w:
        w.append(iq, ids)
    assert main(["classify", str(fleet / "model"), str(labelled), "--json", "--no-progress"]) == 0
    again = json_lines(capsys)[:-1]
    assert [p["device"] for p in again] == [p["device"] for p in packets]
    # text output: a header, one line per packet, the summary
    assert main(["classify", str(fleet / "model"), str(live), "--no-progress"]) == 0
    text = capsys.readouterr().out.strip().splitlines()
    assert text[0].split()[:3] == ["packet", "device", "verdict"] and len(text) == 1 + ids.size + 2
    assert text[-2].startswith(f"{ids.size} packets:")


def test_public_layout_gives_the_native_files_decisions(fleet, tmp_path, capsys) -> None:
    """The authors' layout ('data' rows [I | Q] in float64, 'label' (1, N), no LoRa parameters: read at the
    model's) decides every row as the native file of the same rows does."""
    iq, ids = load_dataset(fleet / "test.h5", devices=[1, 6])
    public = tmp_path / "public.h5"
    with h5py.File(public, "w") as f:
        f["data"] = np.concatenate([iq.real, iq.imag], axis=1).astype(np.float64)
        f["label"] = ids[None, :].astype(np.float64)
    native = tmp_path / "native.h5"
    with PreambleWriter(native, LoRaConfig(), source="test") as w:
        w.append(iq, ids)
    runs = []
    for path in (public, native):
        assert main(["classify", str(fleet / "model"), str(path), "--json", "--no-progress"]) == 0
        runs.append(json_lines(capsys)[:-1])
    assert [(p["device"], p["verdict"], p["label"]) for p in runs[0]] == [
        (p["device"], p["verdict"], p["label"]) for p in runs[1]
    ]
    assert len(runs[0]) == ids.size and all(p["start_sample"] is None for p in runs[0])


def test_recording_is_detected_first(fleet, tmp_path, capsys) -> None:
    rec = tmp_path / "stream.sigmf-meta"
    sim = ["-q", "simulate", "--stream", str(rec), "--n-devices", "3", "--rogues", "1", "--duration-s", "2"]
    assert main([*sim, "--seed", "1", "--spread", "3"]) == 0
    capsys.readouterr()
    assert main(["classify", str(fleet / "model"), str(rec), "--json", "--no-progress"]) == 0
    lines = json_lines(capsys)
    packets = lines[:-1]
    anns = sorted(json.loads(rec.read_text())["annotations"], key=lambda a: a["core:sample_start"])
    assert len(packets) == len(anns) > 2
    truth = np.array([a["core:sample_start"] for a in anns])
    assert np.all(np.abs(np.array([p["start_sample"] for p in packets]) - truth) <= 1)
    assert [p["label"] for p in packets] == [-1 if a["core:label"] == "rogue" else int(a["core:label"])
                                             for a in anns]
    assert all(p["snr_db"] is not None and p["cfo_hz"] is not None for p in packets)
    assert lines[-1]["n_packets"] == len(anns) and lines[-1]["unsupported"] == 0
    # evaluate on the recording scores these very decisions against the annotations' labels
    assert main(["-q", "evaluate", str(fleet / "model"), str(rec), "--json", "--no-progress"]) == 0
    ev = json.loads(capsys.readouterr().out)
    known = ev["device_ids"]
    conf = _hybrid_confusion(packets, known)
    assert conf.tolist() == ev["confusion_hybrid"] and ev["n_packets"] == int(conf.sum()) > 0
    assert ev["unknown_devices"] == sorted({p["label"] for p in packets} - set(known))


def test_registry_decisions_are_authenticates(fleet, tmp_path, capsys) -> None:
    reg = tmp_path / "fleet.db"
    enroll = ["-q", "enroll", str(fleet / "model"), str(fleet / "train.h5"), "--registry", str(reg)]
    assert main([*enroll, "--devices", "4-5", "--packets", "0:20"]) == 0
    capsys.readouterr()
    base = [str(fleet / "model"), str(fleet / "test.h5"), "--registry", str(reg), "--devices", "3-6"]
    with Registry.open(reg) as r:
        n_audit = len(r.audit())
    assert main(["classify", *base, "--json", "--no-progress", "--far", "0.05"]) == 0
    lines = json_lines(capsys)
    packets, summary = lines[:-1], lines[-1]
    with Registry.open(reg) as r:
        assert len(r.audit()) == n_audit  # classify leaves the audit log alone
    assert main(["classify", *base, "--no-progress", "--far", "0.05", "-o", str(tmp_path / "c.jsonl")]) == 0
    capsys.readouterr()
    auth_file = ["-o", str(tmp_path / "a.jsonl")]
    assert main(["authenticate", *base, "--json", "--no-progress", "--far", "0.05", *auth_file]) == 0
    auth = json_lines(capsys)[:-1]
    # authenticate -o writes the records classify --registry writes
    from_classify = (tmp_path / "c.jsonl").read_text().splitlines()
    from_authenticate = (tmp_path / "a.jsonl").read_text().splitlines()
    assert from_classify[:-1] == from_authenticate[:-1] and len(from_classify) == 4 * N_TEST + 1
    assert len(packets) == len(auth) == 4 * N_TEST
    assert [p["device"] for p in packets] == [a["device"] for a in auth]
    assert [p["verdict"] for p in packets] == [a["verdict"] for a in auth]
    assert [p["score"] for p in packets] == [a["score"] for a in auth]
    assert [p["nearest_device"] for p in packets] == [a["nearest_device"] for a in auth]
    assert {p["verdict"] for p in packets} <= {"accept", "rogue"}
    assert all(p["confidence"] is None and p["score"] > 0 for p in packets)
    assert all(p["device"] in (None, 4, 5) for p in packets)
    assert summary["registry"] == str(reg)
    assert summary["rejected"] == sum(p["verdict"] == "rogue" for p in packets)
    # truth from the labels: the enrolled devices' packets mostly nearest to themselves (chance: 1/2), and
    # the strangers' called rogue more often than theirs (negative control)
    nearest_own = [p["nearest_device"] == p["label"] for p in packets if p["label"] in (4, 5)]
    rogue_own = [p["verdict"] == "rogue" for p in packets if p["label"] in (4, 5)]
    rogue_strangers = [p["verdict"] == "rogue" for p in packets if p["label"] in (3, 6)]
    assert np.mean(nearest_own) > 0.5 and np.mean(rogue_strangers) > np.mean(rogue_own)


def test_progress_never_reaches_stdout(fleet, monkeypatch, capsys) -> None:
    import lorarffi.cli.progress as progress

    monkeypatch.setattr(progress, "progress_enabled", lambda args: True)
    assert main(["classify", str(fleet / "model"), str(fleet / "test.h5"), "--devices", "1", "--json"]) == 0
    out = capsys.readouterr().out
    assert len([json.loads(line) for line in out.strip().splitlines()]) == N_TEST + 1


def test_bad_input_is_one_line(fleet, tmp_path, capsys) -> None:
    missing = tmp_path / "nope.h5"
    assert main(["classify", str(fleet / "model"), str(missing), "--no-progress"]) == 2
    one_error_line(capsys, "nope.h5")
    assert main(["classify", str(tmp_path), str(fleet / "test.h5"), "--no-progress"]) == 2
    one_error_line(capsys, "not a model directory")
