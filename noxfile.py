"""Development sessions: `python -m nox` runs tests, lint and typecheck."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _groups(*names: str) -> list[str]:
    requirements: list[str] = []
    for name in names:
        requirements.extend(nox.project.dependency_groups(PYPROJECT, name))
    return requirements


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (without the slow soak and fuzz tests)."""
    session.install("-e", ".", *_groups("test"))
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Soak the real server for 3 minutes: churn, resets, hostile lines (slow)."""
    session.install("-e", ".", *_groups("test"))
    session.run("pytest", "-m", "slow", "tests/test_soak.py", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Send the real server random bytes for a minute beside a canary (slow)."""
    session.install("-e", ".", *_groups("test"))
    session.run("pytest", "-m", "slow", "tests/test_fuzz.py", *session.posargs)


#: Where the full benchmark run's results are kept (committed).
BENCH_RESULTS = "benchmarks/results/latest.jsonl"
#: Where any other run's results go unless `--json` says: a smoke test or a
#: part of the suite must not replace the full run's (git-ignored).
BENCH_SCRATCH = "benchmarks/results/scratch/latest.jsonl"


def _option(args: list[str], name: str) -> str | None:
    """The value of `name` in `args` (`--name=V` or `--name V`), if given."""
    for index, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and index + 1 < len(args):
            return args[index + 1]
    return None


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark trio-chat, against ngircd if installed (slow: about 25 minutes).

    The full run (no arguments) writes benchmarks/results/latest.jsonl and
    paced-latency.png beside it; with arguments after `--` (they go to
    benchmarks/run.py: `-- --quick` for a smoke test, `-- --scenario burst`
    for one scenario) the results go to results/scratch/ instead, unless
    `--json FILE` names a file.
    """
    session.install("-e", ".", *_groups("bench"))
    args = list(session.posargs)
    results = _option(args, "--json") or (BENCH_SCRATCH if args else BENCH_RESULTS)
    session.run(
        "python",
        "benchmarks/run.py",
        "--compare=ngircd",
        "--tls",
        "--db=both",
        "--repeat=3",
        "--servers=trio-chat,trio-chat-irc",
        "--fanout-shapes=20x500",
        "--rate=100,200,500,1000,2000",
        "--duration=5",
        "--connections=2000,10000",
        "--burst-members=20,240",
        "--burst-senders=6,12",
        f"--json={results}",
        *args,
        success_codes=[0, 1],  # a failed run shows in the table; chart the rest
    )
    scenarios = _option(args, "--scenario")
    if not args:  # the full run: the event loop's pause under group commits too
        gap = str(Path(results).with_name("store-gap.jsonl"))
        session.run("python", "benchmarks/store_gap.py", f"--json={gap}")
    if scenarios is not None and "paced" not in scenarios.split(","):
        return  # the chart is of the paced runs
    chart = str(Path(results).with_name("paced-latency.png"))
    session.run("python", "benchmarks/chart.py", results, f"--output={chart}")


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and cancellation mistakes: ruff, ruff format, flake8-async."""
    session.install(*_groups("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("flake8", "trio_chat", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package and the tests with mypy --strict."""
    session.install("-e", ".", *_groups("typecheck"))
    session.run("mypy")
