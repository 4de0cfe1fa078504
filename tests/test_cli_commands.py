"""The `dep-lightning` command table: every subcommand is documented and answers --help."""

import re

import pytest

from dep_lightning import cli


def documented() -> set[str]:
    return set(re.findall(r"^  (\w+)\s", cli.__doc__, flags=re.MULTILINE))


def test_every_subcommand_is_in_the_help_text():
    names = set(cli.FRAMEWORK_COMMANDS) | {"prepare"}
    assert names <= documented(), names - documented()
    assert "score" in documented() and "fit" in cli.__doc__


@pytest.mark.parametrize("name", sorted(cli.FRAMEWORK_COMMANDS))
def test_every_framework_subcommand_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out.lower()
