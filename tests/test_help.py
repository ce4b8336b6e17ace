"""Help texts: command lists never cut with "...", and what `distill` and `data csv` say they do."""

import pytest
from click.testing import CliRunner

from cpsd_tf.cli import cli


def _help(*args, width=None):
    extra = {} if width is None else {"terminal_width": width}
    result = CliRunner().invoke(cli, [*args, "--help"], **extra)
    assert result.exit_code == 0, result.output
    return result.output


def _commands(text):
    """{command: its listed description, wrapped lines joined} of a help text's "Commands:" section."""
    rows = {}
    for line in text.split("Commands:\n", 1)[1].splitlines():
        if not line.strip():
            break
        name, _, description = line.strip().partition(" ")
        if line.startswith("  ") and not line.startswith("   "):
            rows[name] = description.strip()
        else:  # a wrapped continuation line
            last = list(rows)[-1]
            rows[last] = f"{rows[last]} {line.strip()}".replace("- ", "-")
    return rows


@pytest.mark.parametrize("width", [None, 60])
@pytest.mark.parametrize("group", [(), ("data",)], ids=["top", "data"])
def test_command_lists_are_not_truncated(group, width):
    rows = _commands(_help(*group, width=width))
    assert len(rows) >= 5, rows
    for name, description in rows.items():
        assert "..." not in description, (name, description)
        assert description.endswith("."), (name, description)


def test_distill_help_says_what_it_does():
    text = " ".join(_help("distill").split())
    assert "never trains teachers" in text
    for mode in ("online", "cached_views", "cached_clean"):
        assert mode in text
    assert "cpsd-tf logits" in text and "augmented batch" in text


def test_data_csv_help_describes_both_formats_with_examples():
    text = _help("data", "csv")
    assert "'path,labels'" in text and "separated by ';'" in text
    assert "street/0001.jpg,car;person" in text
    assert '{"path": "street/0001.jpg", "labels": ["car", "person"]}' in text
    assert ".jsonl" in text
