"""Every user error is one line on stderr and exit status 2, never a traceback (issue 7's reproductions).

Each case runs ``banditloop`` as a subprocess, as a user would.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BANDITLOOP_")}
    return {**base, "PYTHONPATH": str(ROOT), **extra}


def banditloop(*args: str, cwd: Path, environ: dict[str, str] | None = None, timeout: float = 120,
               stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "banditloop.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=environ or env(), timeout=timeout, stdin=stdin)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, status: int = 2) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- the database ------------------------------------------------------------------------------------
DB_COMMANDS = [
    ["models"],
    ["replay", "events.jsonl", "--learner", "ts"],
    ["simulate", "--policy", "ts", "--steps", "50"],
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "events.jsonl").write_text(
        '{"type":"impression","event_id":"e","ts":1,"impression_id":"i","arm":"a","context":{}}\n')
    return tmp_path


@pytest.mark.parametrize("command", DB_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("url, needles", [
    ("sqlite:////nonexistent/dir/x.db", ("/nonexistent/dir", "does not exist")),
    ("postgres://user@127.0.0.1/db", ("unknown database type 'postgres'", "postgresql+psycopg://")),
    ("notaurl", ("'notaurl' is not a database URL",)),
    ("postgresql+psycopg://postgres@127.0.0.1:1/db", ("cannot connect", "is the server running")),
], ids=["missing-dir", "postgres-scheme", "not-a-url", "server-down"])
def test_database_errors_are_one_line(workdir, command, url, needles):
    proc = banditloop(*command, "--db", url, cwd=workdir)
    assert_one_line_error(proc, *needles)


def test_database_password_is_not_printed(workdir):
    proc = banditloop("models", "--db", "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/db", cwd=workdir)
    line = assert_one_line_error(proc, "postgres:***@")
    assert "s3cret" not in line


@pytest.mark.postgres
def test_missing_postgres_database_is_one_line(workdir, postgres_server):
    proc = banditloop("models", "--db", f"{postgres_server}/banditloop_no_such_db", cwd=workdir)
    assert_one_line_error(proc, "banditloop_no_such_db", "does not exist", "createdb")


def test_missing_psycopg_names_the_extra(workdir, tmp_path_factory):
    # a psycopg that cannot be imported, as in an installation without the `postgres` extra
    fake = tmp_path_factory.mktemp("no-psycopg")
    (fake / "psycopg").mkdir()
    (fake / "psycopg" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    proc = banditloop("models", "--db", "postgresql+psycopg://postgres@127.0.0.1/x", cwd=workdir,
                      environ=env(PYTHONPATH=f"{fake}{os.pathsep}{ROOT}"))
    assert_one_line_error(proc, "pip install 'banditloop[postgres]'")


# -- files and argument values -----------------------------------------------------------------------
def test_replay_of_a_directory(workdir):
    assert_one_line_error(banditloop("replay", str(workdir), "--learner", "ts", cwd=workdir), "is a directory")


def test_replay_of_a_truncated_gzip(workdir):
    data = gzip.compress(b"".join(
        b'{"type":"impression","event_id":"e%d","ts":%d,"impression_id":"i%d","arm":"a","context":{}}\n' % (i, i, i)
        for i in range(2000)))
    (workdir / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    proc = banditloop("replay", "cut.jsonl.gz", "--learner", "ts", cwd=workdir)
    assert_one_line_error(proc, "cut.jsonl.gz", "truncated")


def test_replay_of_a_missing_file(workdir):
    assert_one_line_error(banditloop("replay", "nope.jsonl", "--learner", "ts", cwd=workdir), "no such log: nope.jsonl")


@pytest.mark.parametrize("args, needles", [
    (["simulate", "--policy", "ts", "--out", "."], ("--out . is a directory",)),
    (["simulate", "--policy", "ts", "--out", "a/b/c.jsonl"], ("directory a/b does not exist",)),
    (["simulate", "--policy", "ts", "--dim", "-1"], ("--dim must be >= 1",)),
    (["simulate", "--policy", "ts", "--arms", "0"], ("--arms must be >= 1",)),
    (["replay", "events.jsonl", "--learner", "ts", "--dim", "-1"], ("argument --dim", "must be > 0")),
    (["replay", "events.jsonl", "--learner", "nope"], ("argument --learner", "invalid choice")),
    (["models", "--keep", "2"], ("--keep goes with --prune",)),
    (["nosuchcommand"], ("invalid choice",)),
    (["consume", "--group", "g", "--learner", "ts"], ("--bootstrap",)),
], ids=["out-dir", "out-deep", "dim", "arms", "replay-dim", "learner", "keep-without-prune", "command",
        "required"])
def test_bad_arguments_are_one_line(workdir, args, needles):
    assert_one_line_error(banditloop(*args, cwd=workdir), *needles)
    assert not (workdir / "a").exists()


def test_bad_environment_value_is_one_line(workdir):
    proc = banditloop("replay", "events.jsonl", "--learner", "ts", cwd=workdir, environ=env(BANDITLOOP_DIM="x"))
    assert_one_line_error(proc, "$BANDITLOOP_DIM")


# -- Kafka -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["produce", "events.jsonl"], ["consume", "--group", "g", "--learner", "ts"]],
                         ids=lambda c: c[0])
def test_unreachable_broker_is_one_line(workdir, command):
    proc = banditloop(*command, "--bootstrap", "127.0.0.1:1", cwd=workdir)
    assert_one_line_error(proc, "no Kafka broker answers at 127.0.0.1:1")


@pytest.mark.kafka
def test_produce_without_topics_and_no_create_fails_fast(workdir, kafka_bootstrap):
    started = time.monotonic()
    proc = banditloop("produce", "events.jsonl", "--bootstrap", kafka_bootstrap, "--impressions-topic", "nc-imp",
                      "--clicks-topic", "nc-clk", "--conversions-topic", "nc-cnv", "--dead-letter-topic", "nc-dl",
                      "--no-create-topics", cwd=workdir)
    assert_one_line_error(proc, "do not exist", "nc-imp")
    assert time.monotonic() - started < 15


@pytest.mark.kafka
def test_produce_creates_missing_topics_with_equal_counts(workdir, kafka_bootstrap):
    import json

    from banditloop.pipeline.topics import topic_partitions

    names = ["--impressions-topic", "mk-imp", "--clicks-topic", "mk-clk", "--conversions-topic", "mk-cnv",
             "--dead-letter-topic", "mk-dl"]
    started = time.monotonic()
    proc = banditloop("produce", "events.jsonl", "--bootstrap", kafka_bootstrap, *names, "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 25  # no 30 s metadata wait for a missing topic
    assert json.loads(proc.stdout)["sent"] == {"mk-imp": 1, "mk-clk": 0, "mk-cnv": 0}
    counts = topic_partitions(kafka_bootstrap, ["mk-imp", "mk-clk", "mk-cnv", "mk-dl"])
    assert counts["mk-imp"] == counts["mk-clk"] == counts["mk-cnv"] >= 1 and counts["mk-dl"] == 1


def test_broker_on_a_taken_port_fails(workdir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = banditloop("broker", "--port", str(port), cwd=workdir, timeout=60)
    assert_one_line_error(proc, f"127.0.0.1:{port} is already in use")
    assert "Ctrl-C to stop" not in proc.stdout


# -- serving -----------------------------------------------------------------------------------------
def test_serve_of_a_missing_model_fails_fast(workdir):
    proc = banditloop("serve", "--model", "TYPO", "--db", f"sqlite:///{workdir / 'x.db'}", "--port", "0",
                      cwd=workdir, timeout=60)
    assert_one_line_error(proc, "no model 'TYPO'", "--wait-for-model")


# -- interrupts, closed pipes, --debug ---------------------------------------------------------------
def test_ctrl_c_is_one_line_and_130(workdir):
    proc = subprocess.Popen([sys.executable, "-m", "banditloop.cli", "simulate", "--policy", "ts", "--steps",
                             "100000000", "--no-checkpoint", "--quiet"], cwd=workdir, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # well into the run
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "interrupted",
                          status=130)


def test_ctrl_c_while_the_commands_load_is_one_line_and_130(workdir):
    # a KeyboardInterrupt while the command modules are imported (where start-up time goes)
    code = ("import sys, importlib, banditloop.commands.parser as p\n"
            "def interrupted(name):\n    raise KeyboardInterrupt\n"
            "p.import_module = interrupted\n"
            "from banditloop.cli import main\nsys.exit(main(['models']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env(), capture_output=True, text=True,
                          timeout=60)
    assert_one_line_error(proc, "interrupted", status=130)


@pytest.mark.parametrize("command", [["models"], ["learners"], ["learners", "--json"]])
def test_closed_stdout_is_one_line(workdir, command):
    read, write = os.pipe()
    os.close(read)  # like `| head -1` that has already exited
    try:
        proc = subprocess.run([sys.executable, "-m", "banditloop.cli", *command], cwd=workdir, env=env(),
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert_one_line_error(proc, "broken pipe")


def test_debug_shows_the_traceback(workdir):
    for proc in (banditloop("--debug", "models", "--db", "notaurl", cwd=workdir),
                 banditloop("models", "--db", "notaurl", "--debug", cwd=workdir),
                 banditloop("models", "--db", "notaurl", cwd=workdir, environ=env(BANDITLOOP_DEBUG="1"))):
        assert proc.returncode == 2
        assert "Traceback" in proc.stderr and "ArgumentError" in proc.stderr
        assert proc.stderr.rstrip().splitlines()[-1].startswith("banditloop models: error: --db 'notaurl'")


def test_a_bug_is_one_line_exit_1_and_asks_for_a_report(workdir):
    code = ("import sys\nimport banditloop.commands.models as m\n"
            "def broken(args):\n    raise ZeroDivisionError('boom')\n"
            "m.run = broken\nfrom banditloop.cli import main\nsys.exit(main(['models']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env(), capture_output=True, text=True,
                          timeout=60)
    assert_one_line_error(proc, "internal error: ZeroDivisionError: boom", "--debug", "report", status=1)
