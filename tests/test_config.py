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
        (
            "[serve]\nmax-per-address = 'fifty'\n",
            "[serve] max-per-address: must be a whole number, not 'fifty'",
        ),
        ("[serve]\nflood-rate = 'fast'\n", "flood-rate: must be a number, not 'fast'"),
        ("[serve\n", "is not valid TOML"),
        ("[serve]\noperator = 'teacher'\n", "must be a list of strings"),
        ("[serve]\nallow = [1, 2]\n", "must be a list of strings"),
    ],
)
def test_bad_files_are_explained(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse(tmp_path, toml, "serve")


def test_the_readme_classroom_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index(
        "```toml\n# trio-chat.toml\n[serve]", readme.index("closed classroom server")
    )
    toml = readme[start + len("```toml\n") : readme.index("```", start + 7)]
    args = parse(tmp_path, toml, "serve", "--operator", "head")
    assert args.operators == ["teacher", "assistant", "head"]
    assert args.server_password == "blue giraffe 42"
    assert args.client_ca == "/etc/trio-chat/students-ca.pem"
    assert args.motd_file == "/etc/trio-chat/motd.txt"
    assert args.allow == [] and args.registered_only is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--operator", "teacher", "--db", ":memory:"], "need registered names"),
        (["--registered-only", "--db", ":memory:"], "need registered names"),
        (["--motd-file", "/nonexistent/motd.txt"], "cannot read"),
        (["--allow", "not a name"], "not a valid name"),
        (
            ["--db", "/nonexistent/dir/chat.db"],
            "cannot open the database /nonexistent/dir/chat.db: the directory"
            " /nonexistent/dir does not exist",
        ),
    ],
)
def test_bad_moderation_settings_stop_the_server(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_chat", "serve", "--port", "0", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_log_levels_in_any_case(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--log-level", "info"])
    assert args.log_level == "INFO"
    assert parse(tmp_path, "[serve]\nlog-level = 'debug'\n", "serve").log_level == (
        "DEBUG"
    )


def test_help_names_only_defaults_worth_naming(
    capsys: pytest.CaptureFixture[str],
) -> None:
    texts = {}
    for command in ("serve", "client", "gen-certs"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        texts[command] = text = " ".join(capsys.readouterr().out.split())
        for noise in ("(default: False)", "(default: None)", "(default: [])"):
            assert noise not in text, (command, noise)
        assert "the default) (default" not in text
    assert "(default: 7777)" in texts["serve"] and "(default: 7777)" in texts["client"]
    assert "(default: 10)" in texts["serve"]  # the handshake timeout, not 10.0


def test_client_help_names_its_environment_and_bell(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["client", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for word in ("TRIO_CHAT_PASSWORD", "TRIO_CHAT_SERVER_PASSWORD", "/bell"):
        assert word in text


def test_a_bad_number_on_the_command_line_is_explained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--max-per-address", "fifty"])
    assert "must be a whole number, not 'fifty'" in capsys.readouterr().err


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


def test_listeners_from_the_command_line_and_the_file(tmp_path: Path) -> None:
    from trio_chat.cli import Listen, _listens

    args = build_parser().parse_args(
        ["serve", "--listen", "line:0.0.0.0:7777", "--listen", "ircs:[::1]:6697"]
    )
    assert _listens(args) == [
        Listen("line", "0.0.0.0", 7777),
        Listen("ircs", "::1", 6697),
    ]
    # The short form adds its listener when it is given, and is the default.
    args = build_parser().parse_args(["serve", "--listen", "irc:127.0.0.1:0", "--tls"])
    assert _listens(args)[-1] == Listen("tls", "127.0.0.1", 7777)
    assert _listens(build_parser().parse_args(["serve"])) == [
        Listen("line", "127.0.0.1", 7777)
    ]
    args = parse(
        tmp_path,
        '[serve]\nlisten = ["tls:0.0.0.0:7777", "irc:0.0.0.0:6667"]\n',
        "serve",
    )
    assert [listen.kind for listen in _listens(args)] == ["tls", "irc"]
    with pytest.raises(ConfigError, match="KIND:HOST:PORT with KIND one of"):
        parse(tmp_path, '[serve]\nlisten = ["ftp:0.0.0.0:21"]\n', "serve")


def test_a_bad_listener_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_chat", "serve", "--listen", "line:localhost"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "'line:localhost' is not KIND:HOST:PORT" in result.stderr
