"""Settings from a TOML file and ``LORA_RFFI_*`` variables: precedence flag > environment > file > built-in
default, the default location, shared keys and command tables, positionals the settings give, values parsed as
the flag parses them, and one error line (exit code 2) naming the file or variable and the key."""

from __future__ import annotations

import json
import pathlib

import pytest

from lorarffi.cli import build_parser, main
from lorarffi.cli.config import apply_settings, config_path, default_config_path


def _parse(argv: list[str], environ: dict[str, str] | None = None):
    parser = build_parser()
    apply_settings(parser, argv, environ or {})
    return parser.parse_args(argv)


@pytest.fixture()
def config(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "# shared keys\n"
        'gain_db = 10\ncenter_freq_hz = "868.1M"\nmodel_dir = "runs/shared"\n'
        "[live]\n"
        'source = "zmq:tcp://127.0.0.1:5555"\nduration_s = 7.5\nno-view = true\n'
        "[classify]\n"
        'batch-size = 16\nout = "pred.csv"\n'
        "[registry.list]\n"
        "json = true\n"
    )
    return path


def test_precedence_flag_then_environment_then_file_then_default(config: pathlib.Path) -> None:
    live = ["--config", str(config), "live"]
    assert _parse(["live"]).gain_db is None  # built-in default
    assert _parse(live).gain_db == 10.0  # the file
    assert _parse(live, {"LORA_RFFI_GAIN_DB": "30"}).gain_db == 30.0  # the environment beats the file
    assert _parse([*live, "-g", "40"], {"LORA_RFFI_GAIN_DB": "30"}).gain_db == 40.0  # the flag beats both
    assert _parse([*live, "-g", "agc"]).gain_db == "agc"
    args = _parse(live)
    # values parsed as the flag parses them; a table's keys only reach its command
    assert args.center_freq_hz == pytest.approx(868.1e6) and args.source == "zmq:tcp://127.0.0.1:5555"
    assert args.duration_s == 7.5 and args.no_view is True and args.model == "runs/shared"
    other = _parse(["--config", str(config), "classify", "in.h5"])
    assert (other.batch_size, other.out) == (16, "pred.csv")
    assert (other.model_dir, other.input) == ("runs/shared", "in.h5")
    assert not hasattr(other, "source") and _parse(["--config", str(config), "detect", "x"]).json is False
    assert _parse(["--config", str(config), "registry", "list", "r.db"]).json is True
    # a positional the settings give may still be given on the command line
    given = _parse(["--config", str(config), "classify", "runs/mine", "in.h5"])
    assert (given.model_dir, given.input) == ("runs/mine", "in.h5")


def test_environment_alone_and_switches(tmp_path: pathlib.Path) -> None:
    env = {"LORA_RFFI_REGISTRY": "fleet.db", "LORA_RFFI_MODEL_DIR": "runs/env", "LORA_RFFI_SF": "9"}
    args = _parse(["classify", "in.h5"], env)
    assert (args.registry, args.model_dir, args.sf) == ("fleet.db", "runs/env", 9)
    # a required option given by the environment is no longer missing
    auth = _parse(["authenticate", "in.h5"], env)
    assert (auth.registry, auth.model_dir) == ("fleet.db", "runs/env")
    assert _parse(["authenticate", "m", "in.h5", "--registry", "cli.db"], env).registry == "cli.db"
    # the shared name of an option spelt otherwise: torch_device is classify's --torch-device (dest device)
    assert _parse(["classify", "m", "in.h5"], {"LORA_RFFI_TORCH_DEVICE": "cpu"}).device == "cpu"
    assert _parse(["live"], {"LORA_RFFI_MODEL_DIR": "runs/env"}).model == "runs/env"  # live's --model
    # live's --model and --registry may be repeated: the first flag replaces the setting, the next add to it
    env = {"LORA_RFFI_MODEL_DIR": "runs/env", "LORA_RFFI_REGISTRY": "env.db"}
    assert _parse(["live", "--model", "a"], env).model == ["a"]
    given = _parse(["live", "--model", "a", "--registry", "a.db", "--model", "b", "--registry", "b.db"], env)
    assert (given.model, given.registry) == (["a", "b"], ["a.db", "b.db"])
    assert _parse(["live"], env).registry == "env.db"


def test_default_location_and_explicit_file(tmp_path: pathlib.Path, monkeypatch) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert default_config_path(env) == tmp_path / "lora-rffi" / "config.toml"
    assert config_path(["live"], env) is None  # no file there: no settings
    default = tmp_path / "lora-rffi" / "config.toml"
    default.parent.mkdir()
    default.write_text("gain_db = 5\n")
    assert config_path(["live"], env) == default
    assert _parse(["live"], env).gain_db == 5.0
    other = tmp_path / "other.toml"
    other.write_text("gain_db = 6\n")
    assert _parse(["live"], {**env, "LORA_RFFI_CONFIG": str(other)}).gain_db == 6.0
    third = tmp_path / "third.toml"
    third.write_text("gain_db = 7\n")
    assert _parse(["--config", str(third), "live"], {**env, "LORA_RFFI_CONFIG": str(other)}).gain_db == 7.0
    assert config_path(["live", "--config", str(third)], env) == default  # --config goes before the command


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[live]\nsourcez = 1\n", ["[live] sourcez", "--sourcez"]),
        ("bogus = 1\n", ["'bogus'", "top level"]),
        ("batch_size = 3\n", ["'batch_size'", "top level"]),
        ("[nocommand]\nx = 1\n", ["[nocommand]"]),
        ("[live]\nduration_s = \"long\"\n", ["[live] duration_s", "'long'"]),
        ("[live]\nno_view = \"maybe\"\n", ["[live] no_view", "true or false"]),
        ("[detect]\nformat = \"cs8\"\n", ["[detect] format", "cs8"]),
        ("gain_db = [\n", ["not valid TOML"]),
    ],
)
def test_unknown_or_bad_settings_are_one_line_and_exit_2(
    tmp_path: pathlib.Path, capsys, monkeypatch, text: str, fragments: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["--config", str(path), "completion", "bash"]) == 2  # a command that would succeed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lora-rffi: error: {path}: "), err
    for f in fragments:
        assert f in err[0], err[0]


def test_unknown_or_bad_variables_are_one_line(tmp_path: pathlib.Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("LORA_RFFI_GAIN", "3")
    assert main(["completion", "bash"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LORA_RFFI_GAIN" in err[0] and "LORA_RFFI_GAIN_DB" not in err[0].split(":")[1]
    monkeypatch.delenv("LORA_RFFI_GAIN")
    monkeypatch.setenv("LORA_RFFI_GAIN_DB", "loud")
    assert main(["completion", "bash"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LORA_RFFI_GAIN_DB" in err[0] and "'loud'" in err[0]
    monkeypatch.delenv("LORA_RFFI_GAIN_DB")
    assert main(["--config", str(tmp_path / "missing.toml"), "completion", "bash"]) == 2
    assert "missing.toml: no such config file" in capsys.readouterr().err


def test_a_command_runs_with_its_settings(tmp_path: pathlib.Path, capsys, monkeypatch) -> None:
    """End to end: detect prints JSON lines because the file says so, at the spreading factor it names."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    rec = tmp_path / "s.sigmf-meta"
    sim = ["-q", "simulate", "--stream", str(rec), "--n-devices", "3", "--duration-s", "2", "--seed", "3"]
    assert main(sim) == 0
    capsys.readouterr()
    assert main(["detect", str(rec)]) == 0
    text = capsys.readouterr().out.strip().splitlines()
    assert text[0].split()[0] == "start"  # the table, by default
    path = tmp_path / "lora-rffi" / "config.toml"
    path.parent.mkdir()
    path.write_text("[detect]\njson = true\n")
    assert main(["detect", str(rec)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    packets = [p for p in lines if p.get("type") != "summary"]
    assert len(packets) == len(text) - 1 >= 2 and all("cfo_hz" in p for p in packets)
    path.write_text("sf = 8\n[detect]\njson = true\n")  # the recording is SF7: nothing at SF8
    assert main(["detect", str(rec)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [p for p in lines if p.get("type") != "summary"] == []
