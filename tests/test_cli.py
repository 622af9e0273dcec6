"""The command line a new user reads: help text, pipeline order, one-line errors."""

from __future__ import annotations

import argparse

import pytest

from jukemir.cli import COMMANDS, build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_commands_are_listed_in_pipeline_order(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    order = ["demo", "download", "process", "import", "extract", "grid-config", "probe", "evaluate", "report"]
    positions = [out.index(f"\n    {name}") for name in order]
    assert positions == sorted(positions) and len(COMMANDS) == len(order)


@pytest.mark.parametrize("command", list(_subparsers(build_parser())))
def test_help_states_real_defaults_and_explains_every_argument(command):
    sub = _subparsers(build_parser())[command]
    text = sub.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    for action in sub._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"jukemir {command}: {action.dest} has no help"
        if not action.option_strings:  # positional arguments say what they are
            assert len(action.help) > 10, f"jukemir {command}: {action.dest}: {action.help!r}"
    # an option with a real default states it once
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
            assert "default" in sub._get_formatter()._get_help_string(action), (command, action.dest)


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "download -> process -> extract" in capsys.readouterr().out
