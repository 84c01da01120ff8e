"""Waiting on a database that restarts: transient states are retried, final errors are not (no engine)."""

from __future__ import annotations

import pytest

from scripts.core.errors import AirgapError
from scripts.data import stackdata as sd
from scripts.engine.client import Engine, Result

PG_SHUTTING_DOWN = 'psql: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  the database ' \
                   'system is shutting down'
PG_REFUSED = 'psql: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
PG_BAD_PASSWORD = 'psql: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password ' \
                  'authentication failed for user "postgres"'


class Scripted:
    """A runner answering each call with the next (returncode, stderr, stdout); records argv."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, argv, **kwargs):
        self.calls.append(tuple(argv))
        code, err, out = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Result(tuple(argv), code, out, err)


@pytest.mark.parametrize(("output", "state"), [
    (PG_SHUTTING_DOWN, "shutting down"),
    ("FATAL:  the database system is starting up", "starting up"),
    ("FATAL:  the database system is in recovery mode", "recovering"),
    (PG_REFUSED, "not listening yet"),
    ('psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: No such file or '
     'directory', "not listening yet"),
    ("Error response from daemon: Container abc is restarting, wait until the container is running", "restarting"),
    (PG_BAD_PASSWORD, None),
    ('ERROR:  syntax error at or near "SELEC"', None),
])
def test_transient_states_are_named_and_final_errors_are_not(output, state):
    assert sd.transient_state(output) == state


def test_db_exec_retries_a_restarting_server_then_succeeds():
    runner = Scripted([(2, PG_SHUTTING_DOWN, ""), (2, PG_REFUSED, ""), (0, "", "dify=1\n")])
    res = sd.db_exec(Engine("docker", runner=runner), "c0ffee", ["true"], timeout=30, interval=0.01)
    assert res.stdout == "dify=1\n" and len(runner.calls) == 3
    assert runner.calls[0][:3] == ("docker", "exec", "c0ffee")


def test_db_exec_gives_up_naming_the_last_state():
    runner = Scripted([(2, PG_SHUTTING_DOWN, "")])
    with pytest.raises(AirgapError, match=r"recreating database dify: .* still shutting down after 0s"):
        sd.db_exec(Engine("docker", runner=runner), "c0ffee", ["true"], timeout=0.05, interval=0.01,
                   what="recreating database dify")
    assert len(runner.calls) >= 2


def test_db_exec_fails_at_once_on_a_final_error():
    runner = Scripted([(2, PG_BAD_PASSWORD, "")])
    with pytest.raises(AirgapError, match="password authentication failed"):
        sd.db_exec(Engine("docker", runner=runner), "c0ffee", ["true"], timeout=30, interval=0.01)
    assert len(runner.calls) == 1


def test_wait_db_needs_two_answers_settle_apart_and_restarts_the_count_on_a_failure():
    # ok (first), then shutting down (count restarts), then ok, ok...: needs >= settle between two oks
    runner = Scripted([(0, "", "1"), (2, PG_SHUTTING_DOWN, ""), (0, "", "1")])
    sd.wait_db(Engine("docker", runner=runner), "c0ffee", "postgresql", timeout=30, settle=0.6)
    assert len(runner.calls) >= 4  # ok, fail, ok, (0.5 s later, < settle) ok, ok
    assert all("-h" in call[-1] or "127.0.0.1" in " ".join(call) for call in runner.calls)


def test_wait_db_times_out_naming_the_state():
    runner = Scripted([(2, "FATAL:  the database system is starting up", "")])
    with pytest.raises(AirgapError, match=r"last state: starting up"):
        sd.wait_db(Engine("docker", runner=runner), "c0ffee", "postgresql", timeout=0.2)


def test_ready_command_asks_a_real_query_over_tcp():
    argv = sd.ready_command("postgresql")
    assert argv[:2] == ["sh", "-c"] and "-h 127.0.0.1" in argv[2] and "SELECT 1" in argv[2]
    assert "POSTGRES_PASSWORD" in argv[2] and "secret" not in " ".join(argv)
