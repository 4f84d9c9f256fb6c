"""The configuration file: every option of `serve` and `client` in TOML."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from trio_chat.cli import ConfigError, apply_config, build_parser


def parse(tmp_path: Path, toml: str, *argv: str) -> argparse.Namespace:
    path = tmp_path / "trio-chat.toml"
    path.write_text(toml)
    parser = build_parser()
    apply_config(parser, str(path))
    return parser.parse_args(list(argv))


def test_options_come_from_the_file_and_the_command_line_wins(tmp_path: Path) -> None:
    toml = """
[serve]
host = "0.0.0.0"
port = 7000
tls = true
max-per-address = 30
flood_rate = 0.5
db = ":memory:"
log-level = "DEBUG"

[client]
name = "alice"
"""
    args = parse(tmp_path, toml, "serve", "--port", "7001")
    assert args.host == "0.0.0.0"
    assert args.port == 7001
    assert args.tls is True
    assert args.max_per_address == 30
    assert args.flood_rate == 0.5
    assert args.db == ":memory:"
    assert args.log_level == "DEBUG"
    client = parse(tmp_path, toml, "client")
    assert client.name == "alice"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[serve]\nporty = 1\n", "has no option 'porty'"),
        ("[server]\nport = 1\n", "unknown table [server]"),
        ("[serve]\nport = 99999\n", "port"),
        ("[serve]\ntls = 'yes'\n", "must be true or false"),
        ("[serve]\nlog-level = 'LOUD'\n", "not one of"),
        ("[serve]\nmax-per-address = -1\n", "must be 0 or more"),
        ("[serve\n", "is not valid TOML"),
    ],
)
def test_bad_files_are_explained(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse(tmp_path, toml, "serve")


def test_the_cli_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[serve]\nnope = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "trio_chat", "--config", str(path), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"trio-chat: {path}: [serve] has no option 'nope'"
