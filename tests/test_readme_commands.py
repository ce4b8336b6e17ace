"""The documented cpsd-tf commands still parse (README, the recipes' headers, the scale-out scripts): every
verb and option exists, and every recipe they name loads with their --set overrides (a renamed key or a
dropped option shows up here, not in a user's terminal)."""

import re
import shlex
from pathlib import Path

import click
import pytest

from cpsd_tf import recipe as recipe_mod
from cpsd_tf.cli import cli

ROOT = Path(__file__).resolve().parents[1]
# Placeholders the README writes in upper case, and a value of the right type for each.
PLACEHOLDERS = {"S": "0", "R": "runs/readme-check", "KIND": "cutmix"}


def readme_commands():
    """Every `cpsd-tf ...` command of the README (in code blocks, continuation lines joined, one per shell
    command, and in inline code), and of the recipes' header comments and the scale-out scripts; the
    synopses of the command table (`[...]`, `a|b`, `…`) are left out."""
    text = (ROOT / "README.md").read_text()
    found = []
    for language, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if language not in ("", "bash"):
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            for part in re.split(r"&&|;", line.split(" #")[0]):
                match = re.search(r"(?:^|\s)(cpsd-tf\s[^&]*)", part)
                if match:
                    found.append(match.group(1).strip())
    for span in re.findall(r"`([^`\n]*(?:\n[^`\n]*)?)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        span = " ".join(span.split())
        if span.startswith("cpsd-tf "):
            found.append(span)
    for path in sorted((ROOT / "recipes").glob("*.yaml")) + sorted((ROOT / "docs" / "scale-out").glob("*.sh")):
        lines = [re.sub(r"^#\s?", "", line) for line in path.read_text().splitlines()]
        for line in re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines():
            match = re.match(r"\s*(cpsd-tf\s.*?)(\s+#.*|\s+\(.*)?$", line)  # a command, then its comment
            if match:
                found.append(match.group(1).strip())
    return [c for c in dict.fromkeys(found) if not any(_synopsis(a) for a in shlex.split(c))]


def _synopsis(arg):
    """A word of a usage synopsis rather than of a command: optional parts, alternatives, ellipses."""
    return (arg.startswith(("[", "(")) or (arg.endswith("]") and "=[" not in arg)  # not a list value
            or "|" in arg or "…" in arg)


def _resolve(args):
    """The click command `args` name and the arguments left for it."""
    command, rest = cli, list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        command = command.commands.get(rest[0])
        assert command is not None, f"no such verb: {args}"
        rest = rest[1:]
    return command, rest


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 15
    assert any("--equal-compute" in c for c in COMMANDS) and any("scenes_ablation.yaml" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses_and_its_recipe_loads(command):
    args = [PLACEHOLDERS.get(a, a) for a in shlex.split(command)[1:]]
    args = [re.sub(r"=(S|R|KIND)$", lambda m: "=" + PLACEHOLDERS[m.group(1)], a) for a in args]
    verb, rest = _resolve(args)
    if isinstance(verb, click.Group):
        return  # a bare group name in prose ("cpsd-tf data"): nothing to parse
    context = verb.make_context(f"cpsd-tf {verb.name}", list(rest), resilient_parsing=True)  # click consumes its list
    known = {o for p in verb.params for o in getattr(p, "opts", [])}
    for arg in rest:
        if arg.startswith("--"):
            assert arg.split("=")[0] in known, f"{command}: {verb.name} has no option {arg}"
    path = context.params.get("recipe")
    if path and (ROOT / path).is_file():
        recipe_mod.load(ROOT / path, context.params.get("overrides", ()))
