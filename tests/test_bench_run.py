"""The benchmark runner records the settings the server really runs with.

Its `features` come from `python -m trio_chat serve --help` and the flags
the runner passes, not from numbers written into the runner.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from trio_chat import limits

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run = _load("run")

HELP = """\
usage: trio-chat serve [-h] [--host HOST]

options:
  -h, --help            show this help message and exit
  --host HOST           address to listen on; 0.0.0.0 (or ::) for every
                        interface, e.g. a LAN (default: 127.0.0.1)
  --client-ca FILE      with --tls, require client certificates signed by this
                        CA (PEM) (default: None)

limits:
  Every limit a client can run into; 0 switches most of them off.

  --log-level {DEBUG,INFO,WARNING,ERROR}
                        how much to log to stderr (default: INFO)
  --outbox-messages N   messages queued for one client before it is dropped as
                        too slow (at least 16) (default: 4096)
  --idle-timeout SECONDS
                        seconds of silence before a user is disconnected (0 =
                        off, the default) (default: 0.0)
"""


def test_the_help_gives_each_flag_its_own_default() -> None:
    # Wrapped help, help on the next line, a group's heading after an
    # option, another flag named in a help text, parentheses before the
    # default: each flag gets its own default, and --help (none) nothing.
    assert run.parse_serve_help(HELP) == {
        "--host": "127.0.0.1",
        "--client-ca": "None",
        "--log-level": "INFO",
        "--outbox-messages": "4096",
        "--idle-timeout": "0.0",
    }


def test_the_recorded_features_are_what_the_server_uses() -> None:
    settings = run.trio_chat_settings()
    features = run.TrioChatServer(
        Path("."), False, False, "memory", settings
    ).features()
    assert features["outbox_messages"] == limits.OUTBOX_MAX_MESSAGES
    assert features["outbox_bytes"] == limits.OUTBOX_MAX_BYTES
    assert features["write_timeout_s"] == limits.WRITE_TIMEOUT
    assert features["history_replay_lines"] == limits.HISTORY_LINES
    assert features["max_line_bytes"] == limits.MAX_LINE_BYTES
    assert features["max_paste_lines"] == limits.MAX_PASTE_LINES
    assert features["max_paste_bytes"] == limits.MAX_PASTE_BYTES
    assert features["flags"] == list(run.TRIO_CHAT_FLAGS)
    # The runner's own flags win over the defaults.
    assert settings["--flood-rate"] == "0"


def test_a_flag_the_runner_passes_replaces_the_default() -> None:
    defaults = {"--outbox-bytes": "1048576", "--history": "20"}
    assert run.apply_flags(defaults, ["--outbox-bytes=65536", "--tls"]) == {
        "--outbox-bytes": "65536",
        "--history": "20",
    }


def test_the_runner_and_the_generator_know_the_same_bursts() -> None:
    loadgen = _load("loadgen")
    assert run.BURST_KINDS == loadgen.BURST_KINDS
