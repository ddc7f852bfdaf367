"""``lora-rffi registry list|show|remove|rename|export|import`` in-process: text and JSON output, the registry
changed as asked, and one error line with exit code 2 for files that are not registries or exports."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from lorarffi.cli import main
from lorarffi.rffi.registry import AuditRow, Registry

FP = "sha256:" + "d" * 64
DIM = 4


@pytest.fixture()
def reg_path(tmp_path):
    path = tmp_path / "fleet.db"
    rng = np.random.default_rng(0)
    with Registry.create(path, model_fingerprint=FP, embedding_dim=DIM, model_info={"model": "m"}) as r:
        r.enroll_device(
            21, rng.standard_normal((3, DIM)).astype(np.float32), name="pump", cfo_hz=[-1000.0, -1010.0]
        )
        r.enroll_device(7, rng.standard_normal((2, DIM)).astype(np.float32))
        r.set_threshold(0.5, far=0.01, method="leave-one-out", k=15)
        r.append_audit([AuditRow("accept", device_id=21)])
    return path


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def _one_error_line(capsys, source, problem: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"lora-rffi: error: {source}") and problem in err[0], err[0]


def test_list_json_and_text(reg_path, capsys) -> None:
    assert main(["registry", "list", str(reg_path), "--json"]) == 0
    doc = _json(capsys)
    assert doc["registry"] == str(reg_path) and doc["model_fingerprint"] == FP and doc["embedding_dim"] == DIM
    assert doc["threshold"]["value"] == 0.5 and doc["threshold"]["k"] == 15 and doc["packet_input"] is None
    assert [(d["device_id"], d["name"], d["n_embeddings"]) for d in doc["devices"]] == [
        (7, None, 2),
        (21, "pump", 3),
    ]
    assert doc["devices"][1]["cfo_mean_hz"] == -1005.0 and doc["devices"][1]["cfo_std_hz"] == 5.0
    assert main(["registry", "list", str(reg_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"model       {FP}, {DIM}-d embeddings"
    assert out[2] == "threshold   0.5 at FAR 0.01 (k=15, score knn, leave-one-out)"  # stored without a score
    assert out[3] == "enrolled    (not recorded)"  # enroll_device alone: how the packets were read is unknown
    assert out[4] == "devices     2"
    assert out[6].split()[:2] == ["7", "-"] and out[7].split()[:2] == ["21", "pump"]
    assert out[7].split()[-4:] == ["3", "3", "-1005.0", "5.0"]


def test_show_rename_remove(reg_path, capsys) -> None:
    assert main(["registry", "show", str(reg_path), "21", "--json"]) == 0
    assert _json(capsys)["name"] == "pump"
    assert main(["registry", "rename", str(reg_path), "21", "pump 2", "--json"]) == 0
    assert _json(capsys)["name"] == "pump 2"
    assert main(["registry", "remove", str(reg_path), "7"]) == 0
    assert capsys.readouterr().out.strip() == f"removed device 7 and its 2 embeddings from {reg_path}"
    with Registry.open(reg_path) as r:
        assert [(d.device_id, d.name) for d in r.devices()] == [(21, "pump 2")]
        assert r.reference_embeddings()[0].tolist() == [21] * 3
    assert main(["registry", "show", str(reg_path), "21"]) == 0
    assert "name          pump 2" in capsys.readouterr().out.splitlines()
    assert main(["registry", "show", str(reg_path), "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lora-rffi: error: device 7 is not enrolled in {reg_path}"]


def test_export_then_import_at_another_site(reg_path, tmp_path, capsys) -> None:
    out = tmp_path / "fleet.lrr"
    assert main(["registry", "export", str(reg_path), str(out), "--json"]) == 0
    assert _json(capsys) == {"file": str(out), "n_devices": 2, "n_embeddings": 5}
    exported = out.read_bytes()
    assert main(["registry", "export", str(reg_path), str(out)]) == 2  # an existing file is not replaced
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == exported
    assert main(["registry", "export", str(reg_path), str(out), "--overwrite"]) == 0
    capsys.readouterr()
    site2 = tmp_path / "site2.db"
    assert main(["registry", "import", str(out), str(site2)]) == 0
    assert capsys.readouterr().out.strip() == f"created {site2}: 2 devices, 5 embeddings from {out}"
    with Registry.open(reg_path) as a, Registry.open(site2, model_fingerprint=FP) as b:
        assert a.devices() == b.devices() and a.threshold == b.threshold
        assert a.reference_embeddings()[1].tobytes() == b.reference_embeddings()[1].tobytes()
    assert main(["registry", "import", str(out), str(site2), "--json"]) == 0
    assert _json(capsys) == {
        "registry": str(site2),
        "created": False,
        "device_ids": [7, 21],
        "n_embeddings": 5,
    }


def _damaged(tmp_path, reg_path):
    data = bytearray(reg_path.read_bytes())
    data[4096:] = np.random.default_rng(1).bytes(len(data) - 4096)
    return data


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("random bytes", "file is not a database"),
        ("foreign sqlite", "not a lora-rffi registry (no 'meta' table)"),
        ("damaged registry", "database disk image is malformed"),
        ("missing", "no such registry file"),
    ],
)
@pytest.mark.parametrize("command", ["list", "show", "remove", "export"])
def test_files_that_are_not_registries_give_one_line_and_exit_2(
    reg_path, tmp_path, capsys, kind, problem, command
) -> None:
    bad = tmp_path / "bad.db"
    if kind == "random bytes":
        bad.write_bytes(np.random.default_rng(2).bytes(20_000))
    elif kind == "foreign sqlite":
        with sqlite3.connect(bad) as db:
            db.execute("CREATE TABLE readings (t REAL, v REAL)")
    elif kind == "damaged registry":
        bad.write_bytes(bytes(_damaged(tmp_path, reg_path)))
    extra = {"list": [], "show": ["21"], "remove": ["21"], "export": [str(tmp_path / "x.lrr")]}[command]
    assert main(["registry", command, str(bad), *extra]) == 2
    _one_error_line(capsys, bad, problem)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not a zip at all", "not a lora-rffi registry export"),
        (None, "the registry export is damaged (Bad CRC-32 for file 'embeddings.npy')"),
    ],
)
def test_import_of_a_foreign_or_edited_file_gives_one_line_and_exit_2(
    reg_path, tmp_path, capsys, content, problem
) -> None:
    bad = tmp_path / "bad.lrr"
    if content is None:
        good = tmp_path / "good.lrr"
        assert main(["registry", "export", str(reg_path), str(good)]) == 0
        data = bytearray(good.read_bytes())
        i = data.index(b"\x93NUMPY")  # the stored embeddings.npy: flip one bit of its last embedding
        data[i + 200] ^= 1
        bad.write_bytes(bytes(data))
    else:
        bad.write_bytes(content)
    capsys.readouterr()
    assert main(["registry", "import", str(bad), str(tmp_path / "new.db")]) == 2
    _one_error_line(capsys, bad, problem)
    assert not (tmp_path / "new.db").exists()


def test_registry_without_action_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["registry"])
    assert exc.value.code == 2
    assert "required: ACTION" in capsys.readouterr().err
