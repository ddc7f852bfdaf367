"""``lora-rffi completion bash|zsh|fish``: a shell completion script generated from the argument parsers, so
it knows every subcommand, flag and choice the installed version has.

Install (each shell reads it at start-up)::

    lora-rffi completion bash > ~/.local/share/bash-completion/completions/lora-rffi
    lora-rffi completion zsh > "${fpath[1]}/_lora-rffi"      # a directory on $fpath
    lora-rffi completion fish > ~/.config/fish/completions/lora-rffi.fish

Completes subcommands (nested ones too: ``registry list``), flags of the command typed so far, the choices of
a flag that has them, and file names for other values and positional arguments. The zsh script runs the
bash one through zsh's ``bashcompinit``.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "SHELLS", "add_arguments", "run", "command_tree", "script"]

HELP = "print a shell completion script (bash, zsh or fish)"
DESCRIPTION = (
    "Print a completion script for bash, zsh or fish, made from this version's commands and flags: "
    "subcommands, the flags of the command typed so far, a flag's choices, and file names elsewhere. Save it "
    "where the shell looks for completions (see the examples) and start a new shell."
)
EPILOG = (
    "example: lora-rffi completion bash > ~/.local/share/bash-completion/completions/lora-rffi\n"
    'example: lora-rffi completion zsh > "${fpath[1]}/_lora-rffi"\n'
    "example: lora-rffi completion fish > ~/.config/fish/completions/lora-rffi.fish"
)
SHELLS = ("bash", "zsh", "fish")
_FUNC = "_lora_rffi"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def run(args: argparse.Namespace) -> int:
    import sys

    from lorarffi.cli import PROG, build_parser

    sys.stdout.write(script(build_parser(), args.shell, prog=PROG))
    return 0


@dataclass
class Flag:
    """One option: its spellings, whether it takes a value, its choices and help."""

    strings: list[str]
    takes_value: bool
    choices: list[str] | None
    help: str


@dataclass
class Command:
    """A parser of the tree: its path of subcommand names, flags, subcommands (name -> help), whether it
    takes positional arguments and the choices of those that have them."""

    path: tuple[str, ...]
    flags: list[Flag] = field(default_factory=list)
    subcommands: dict[str, str] = field(default_factory=dict)
    positionals: bool = False
    positional_choices: list[str] = field(default_factory=list)


def _plain(text: str | None) -> str:
    return " ".join((text or "").replace("%(default)s", "").replace("%%", "%").split())


def command_tree(parser: argparse.ArgumentParser) -> list[Command]:
    """Every parser of ``parser``'s tree, the top one first."""
    out = []

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        cmd = Command(path)
        out.append(cmd)
        children = {}
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: _plain(a.help) for a in action._choices_actions}
                for name, sub in action.choices.items():
                    cmd.subcommands[name] = helps.get(name, "")
                    children[name] = sub
            elif action.option_strings:
                choices = None if action.choices is None else [str(c) for c in action.choices]
                takes_value = action.nargs != 0
                cmd.flags.append(Flag(list(action.option_strings), takes_value, choices, _plain(action.help)))
            else:
                cmd.positionals = True
                cmd.positional_choices += [str(c) for c in action.choices or ()]
        for name, sub in children.items():
            walk(sub, (*path, name))

    walk(parser, ())
    return out


def script(parser: argparse.ArgumentParser, shell: str, *, prog: str) -> str:
    """The completion script of ``parser`` for ``shell`` (one of :data:`SHELLS`)."""
    tree = command_tree(parser)
    if shell == "bash":
        return _bash(tree, prog)
    if shell == "zsh":
        return f"#compdef {prog}\nautoload -U +X bashcompinit && bashcompinit\n" + _bash(tree, prog)
    if shell == "fish":
        return _fish(tree, prog)
    raise ValueError(f"shell={shell!r}: use one of {SHELLS}")


# -- bash ---------------------------------------------------------------------------------------------------
def _case(rows: list[tuple[str, str]], fn: str) -> str:
    body = "".join(f"        {shlex.quote(k)}) echo {shlex.quote(v)} ;;\n" for k, v in rows if v)
    return f"{fn}() {{\n    case \"$1\" in\n{body}    esac\n}}\n"


def _bash(tree: list[Command], prog: str) -> str:
    subs = [(" ".join(c.path), " ".join([*c.subcommands, *c.positional_choices])) for c in tree]
    flags = [(" ".join(c.path), " ".join(s for f in c.flags for s in f.strings)) for c in tree]
    valued = [
        (" ".join(c.path), " ".join(s for f in c.flags if f.takes_value for s in f.strings)) for c in tree
    ]
    choices = [
        (f"{' '.join(c.path)}|{s}", " ".join(f.choices)) for c in tree for f in c.flags if f.choices
        for s in f.strings
    ]
    return f"""# bash completion for {prog}, generated by `{prog} completion bash`
{_case(subs, _FUNC + "_subcommands")}{_case(flags, _FUNC + "_flags")}{_case(valued, _FUNC + "_valued")}\
{_case(choices, _FUNC + "_choices")}
{_FUNC}() {{
    local cur prev path="" word i skip=0
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if ((skip)); then skip=0; continue; fi
        case "$word" in
            -*=*) continue ;;
            -*) [[ " $({_FUNC}_valued "$path") " == *" $word "* ]] && skip=1; continue ;;
        esac
        if [[ " $({_FUNC}_subcommands "$path") " == *" $word "* ]]; then path="${{path:+$path }}$word"; fi
    done
    COMPREPLY=()
    if [[ $COMP_CWORD -gt 1 && " $({_FUNC}_valued "$path") " == *" $prev "* ]]; then
        local choices
        choices="$({_FUNC}_choices "$path|$prev")"
        if [[ -n "$choices" ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$choices" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$({_FUNC}_flags "$path")" -- "$cur")
        return 0
    fi
    local subs
    subs="$({_FUNC}_subcommands "$path")"
    if [[ -n "$subs" ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$subs" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
}}
complete -o filenames -F {_FUNC} {prog}
"""


# -- fish ---------------------------------------------------------------------------------------------------
def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(tree: list[Command], prog: str) -> str:
    lines = [f"# fish completion for {prog}, generated by `{prog} completion fish`", f"complete -c {prog} -f"]
    for cmd in tree:
        if not cmd.path:
            cond = "__fish_use_subcommand"
        else:
            cond = "; and ".join(f"__fish_seen_subcommand_from {name}" for name in cmd.path)
            if cmd.subcommands:
                cond += f"; and not __fish_seen_subcommand_from {' '.join(cmd.subcommands)}"
        if not cmd.path or cmd.subcommands:
            for name, text in cmd.subcommands.items():
                lines.append(f"complete -c {prog} -n {_fish_quote(cond)} -a {name} -d {_fish_quote(text)}")
        elif cmd.positional_choices:
            choices = _fish_quote(" ".join(cmd.positional_choices))
            lines.append(f"complete -c {prog} -n {_fish_quote(cond)} -a {choices}")
        elif cmd.positionals:
            lines.append(f"complete -c {prog} -n {_fish_quote(cond)} -F")
        for flag in cmd.flags:
            spec = [
                f"-l {s[2:]}" if s.startswith("--") else f"-s {s[1:]}" if len(s) == 2 else f"-o {s[1:]}"
                for s in flag.strings
            ]
            if flag.choices:
                spec.append(f"-x -a {_fish_quote(' '.join(flag.choices))}")
            elif flag.takes_value:
                spec.append("-r -F")
            lines.append(
                f"complete -c {prog} -n {_fish_quote(cond)} {' '.join(spec)} -d {_fish_quote(flag.help[:80])}"
            )
    return "\n".join(lines) + "\n"
