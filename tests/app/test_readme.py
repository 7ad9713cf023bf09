"""README.md runs as written.

- The "Try everything on the synthetic corpus" block is run line by line, verbatim, through the
  CLI (typer's CliRunner, in a temporary working folder that sees the repository's configs/).
- Every other ``earshot ...`` example is parsed by the CLI's own click parser, so a renamed or
  removed option or command breaks this test.
- The demo table in the README is the one in docs/demo_results.md (written by a real run).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer._click import exceptions as click_errors  # typer 0.29 vendors click
from typer.testing import CliRunner

import earshot.app.cli as cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
TRY_HEADING = "## Try everything on the synthetic corpus"

cli._register()


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """``earshot`` command lines of a shell block (continuations joined, comments dropped)."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "earshot":
            out.append(words[1:])
    return out


def _try_block() -> str:
    section = README.split(TRY_HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = _code_blocks(section)
    assert len(blocks) == 1, "the try-it section has exactly one shell block"
    return blocks[0]


def _parse(args: list[str]):
    """Parse ``args`` down to the leaf command, as the real CLI would, without running it."""
    command = typer.main.get_command(cli.app)
    ctx = command.make_context("earshot", list(args))
    while hasattr(command, "resolve_command"):  # a group: pick the subcommand, parse its part
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def test_other_readme_examples_parse_with_the_cli():
    try_block = _try_block()
    commands = [c for b in _code_blocks(README) if b != try_block for c in _commands(b)]
    assert len(commands) >= 12  # the Use section: data, weights, train, evaluate, ensemble, ...
    for args in commands:
        try:
            _parse(args)
        except click_errors.ClickException as e:  # unknown option, missing argument, bad value
            pytest.fail(f"README example `earshot {shlex.join(args)}` does not parse: {e.format_message()}")


def test_parser_check_catches_a_renamed_option():
    with pytest.raises(click_errors.NoSuchOption):
        _parse(["evaluate", "m", "--data", "x.csv", "--audio-folder", "a"])


def test_readme_demo_table_is_the_demo_results_file():
    results = (ROOT / "docs" / "demo_results.md").read_text().strip()
    assert results in README, "README must quote docs/demo_results.md (earshot demo's results.md) verbatim"
    # two tables, each from a real run: clip retrieval (OUT/results.md) and, from the moments
    # section, audio moment retrieval (OUT/moments_results.md)
    tables, current = [], []
    for line in results.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 2, "docs/demo_results.md holds the retrieval table and the moments table"
    retrieval, moments = tables
    assert retrieval[0] == "| system | R@1 | R@5 | R@10 | mAP@10 |" and len(retrieval) == 6
    assert moments[0] == "| system | R1@0.5 | R1@0.7 | mAP/avg |" and len(moments) == 6
    assert [row.split(" | ")[0].removeprefix("| ").split(" (")[0] for row in moments[2:]] == [
        "sliding window", "sliding window, ranked by expected IoU", "QD-DETR head", "chance"]
    assert "load average" in results and "minutes" in results  # machine, load and time stated


@pytest.mark.slow
def test_try_it_section_runs_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    runner = CliRunner()
    outputs = []
    for args in _commands(_try_block()):
        res = runner.invoke(cli.app, args)
        assert res.exit_code == 0, f"`earshot {shlex.join(args)}` failed:\n{res.output}\n{res.exception!r}"
        outputs.append(res.output)
    runs = tmp_path / "runs" / "try"
    for run in ("infonce", "triplet"):
        assert (runs / run / "averaged" / "model.safetensors").is_file()
        assert "epoch 1/1" in "".join(outputs)  # one line per epoch: CliRunner is not a terminal
    metrics = json.loads((runs / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["t2a/mAP@10"] <= 1.0
    assert (runs / "submission.csv").read_text().startswith("caption,file_name_1")
    assert "R@10" in outputs[7] and "queries" in outputs[7]  # the score table
    assert "synth_" in outputs[-1]  # search lists the evaluation clips
