"""The `troika` command line: version and help."""

import tomllib
from pathlib import Path

from typer.testing import CliRunner

import troika
from troika.cli import app

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

runner = CliRunner()


def test_version_matches_pyproject() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    version = project["version"]
    assert version == troika.__version__
    assert version == troika._VERSION_FALLBACK


def test_version_option_and_command_print_the_version() -> None:
    for arguments in (["--version"], ["version"]):
        result = runner.invoke(app, arguments)
        assert result.exit_code == 0, result.output
        assert result.output == f"troika {troika.__version__}\n"


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "version" in result.output
    assert "--version" in result.output
