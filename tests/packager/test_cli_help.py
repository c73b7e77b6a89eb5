"""The console script's surface: every option and argument of every command says what it
is for (--help is the first documentation a user reads), and shell completion covers it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from packager.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    missing = []
    commands = 0
    for path, parser in _walk(build_parser(), "modelsync"):
        commands += 1
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert commands > 40
    assert missing == [], missing


def test_every_subcommand_has_help() -> None:
    missing = []
    for path, parser in _walk(build_parser(), "modelsync"):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {c.dest for c in action._choices_actions if c.help}
                missing += [f"{path} {name}" for name in action.choices if name not in helped]
    assert missing == [], missing


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_names_commands_and_options(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("promote", "devices", "--fleet", "--calibration"):
        assert word in script


def test_bash_completion_script_is_valid_bash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert sys.executable  # the script needs no Python to complete
