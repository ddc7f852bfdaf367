"""``lora-rffi completion bash|zsh|fish``: every subcommand and flag of the parsers is in each script, and the
bash script completes what a user types (run in a real bash)."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from lorarffi.cli import PROG, SUBCOMMANDS, build_parser, main
from lorarffi.cli.completion import SHELLS, command_tree, script


def _every_flag_and_command(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    flags, commands = set(), set()

    def walk(p: argparse.ArgumentParser) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    commands.add(name)
                    walk(sub)
            flags.update(a.option_strings)

    walk(parser)
    return flags, commands


@pytest.mark.parametrize("shell", SHELLS)
def test_script_names_every_subcommand_and_flag(shell: str, capsys) -> None:
    assert main(["completion", shell]) == 0
    text = capsys.readouterr().out
    assert text == script(build_parser(), shell, prog=PROG)
    flags, commands = _every_flag_and_command(build_parser())
    assert {name.replace("_", "-") for name in SUBCOMMANDS} <= commands and {"list", "info"} <= commands
    assert len(flags) > 50
    if shell == "fish":
        words = text.split()
        for f in flags:
            spelled = ("-l", f[2:]) if f.startswith("--") else ("-s", f[1:])
            assert any(words[i : i + 2] == list(spelled) for i in range(len(words) - 1)), f
        for c in commands:
            assert f"-a {c} " in text, c
    else:
        words = set(text.replace("'", " ").split())
        assert flags <= words, sorted(flags - words)
        assert commands <= words, sorted(commands - words)
    if shell == "zsh":
        assert text.startswith(f"#compdef {PROG}\n") and "bashcompinit" in text


def test_tree_has_one_entry_per_parser() -> None:
    tree = command_tree(build_parser())
    paths = [c.path for c in tree]
    assert paths[0] == () and len(paths) == len(set(paths))
    assert ("registry", "list") in paths and ("classify",) in paths
    live = next(c for c in tree if c.path == ("live",))
    source = next(f for f in live.flags if "--source" in f.strings)
    assert source.takes_value and source.choices is None
    assert not next(f for f in live.flags if "--json" in f.strings).takes_value
    assert next(c for c in tree if c.path == ("completion",)).positional_choices == list(SHELLS)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("words", "want"),
    [
        (["cl"], {"classify"}),
        (["registry", "l"], {"list"}),
        (["-q", "registry", "list", "--j"], {"--json"}),
        (["detect", "--format", "c"], {"cf32", "ci16", "cu8", "ci8"}),
        (["detect", "--sf", "7", "--ch"], {"--chunk-samples"}),  # --sf's value is not a subcommand
        (["--config", "dataset", "registry", "l"], {"list"}),  # a flag's value is never a subcommand
        (["live", "--fo"], {"--format"}),
        (["completion", ""], set(SHELLS)),
        (["classify", "--no-"], {"--no-cfo-gate", "--no-iq-gate", "--no-tracking", "--no-progress"}),
    ],
)
def test_bash_completes_what_is_typed(words: list[str], want: set[str], tmp_path) -> None:
    path = tmp_path / "lora-rffi.bash"
    path.write_text(script(build_parser(), "bash", prog=PROG))
    quoted = " ".join(f"'{w}'" for w in [PROG, *words])
    cmd = (
        f"source {path}; COMP_WORDS=({quoted}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
        f"_lora_rffi; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert set(out.stdout.split()) == want, out.stdout
