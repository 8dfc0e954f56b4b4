"""arq's pytest plugin and test helpers, used the way users use them in their own suites."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import arq
from arq.backends import OpenAIBackend
from arq.errors import BackendError
from arq.testing import (
    CassetteMismatch,
    FakeOpenAIServer,
    RecordingBackend,
    ReplayBackend,
    Reply,
    ScriptedBackend,
    Status,
    assert_invalid_at,
    assert_prompt_matches,
    assert_valid,
)
from tests.schemas import SupportReply

CONTEXT = {"conversation": "Hi, my order A-1234 never arrived. I want a refund."}
GOOD: dict[str, Any] = {
    "request": "a refund",
    "order_id": "A-1234",
    "applicable": ["g1"],
    "checks": [{"id": "g1", "condition": "c", "applies": True, "compliant": True}],
    "decision": "reply",
    "answer": "We are checking the order status.",
}


def suffix(start: str) -> str:
    names = list(GOOD)
    return json.dumps({k: v for k, v in GOOD.items() if names.index(k) >= names.index(start)})


# --- assertions ----------------------------------------------------------------------------


def test_assert_valid_returns_the_model_and_names_the_failing_step() -> None:
    assert assert_valid(SupportReply, GOOD, context=CONTEXT).order_id == "A-1234"
    with pytest.raises(AssertionError, match="invalid at step 'order_id'"):
        assert_valid(SupportReply, {**GOOD, "order_id": "A-9999"}, context=CONTEXT)


def test_assert_invalid_at_checks_the_step() -> None:
    bad = {**GOOD, "decision": "maybe"}
    assert assert_invalid_at(SupportReply, bad, "decision", context=CONTEXT).step == "decision"
    with pytest.raises(AssertionError, match="but it failed at 'decision'"):
        assert_invalid_at(SupportReply, bad, "answer", context=CONTEXT)
    with pytest.raises(AssertionError, match="but it is valid"):
        assert_invalid_at(SupportReply, GOOD, "answer", context=CONTEXT)


def test_prompt_snapshot_is_written_once_then_compared(tmp_path: Path) -> None:
    path = tmp_path / "reply.txt"
    with pytest.raises(AssertionError, match="did not exist; it was written now"):
        assert_prompt_matches(SupportReply, CONTEXT, path)
    assert "=== system ===" in path.read_text()
    assert_prompt_matches(SupportReply, CONTEXT, path)  # unchanged: passes
    other = {"conversation": "Where is my parcel?"}
    with pytest.raises(AssertionError, match=r"(?s)differs from .*\+Where is my parcel\?"):
        assert_prompt_matches(SupportReply, other, path)
    assert_prompt_matches(SupportReply, other, path, update=True)
    assert "Where is my parcel?" in path.read_text()


# --- scripted backend ----------------------------------------------------------------------


def test_scripted_backend_drives_the_executor_with_no_network() -> None:
    backend = ScriptedBackend(json.dumps({**GOOD, "order_id": "A-0000"}), suffix("order_id"))
    with arq.Executor(backend) as executor:
        result = executor.run(SupportReply, CONTEXT)
    assert result.output.order_id == "A-1234"
    assert [r.steps[0] for r in backend.requests] == ["request", "order_id"]
    assert result.trace.attempts[0].stopped_early


def test_scripted_backend_raises_scripted_errors_and_runs_out_loudly() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    backend = ScriptedBackend(BackendError("overloaded", retryable=True, status=503))
    executor = arq.Executor(backend, retry=arq.RetryPolicy(attempts=3, sleep=sleep, jitter=0))
    with pytest.raises(AssertionError, match="no reply is left"):
        executor.run(SupportReply, CONTEXT)
    executor.close()
    assert sleeps == [0.5]
    assert len(backend.calls) == 2


# --- cassettes -----------------------------------------------------------------------------


def record(server: FakeOpenAIServer, path: Path) -> arq.Result[SupportReply]:
    live = OpenAIBackend("fake-model", base_url=server.base_url, api_key="sk-live-secret-123456")
    with arq.Executor(RecordingBackend(live, path)) as executor:
        return executor.run(SupportReply, CONTEXT)


def replay_of_one_good_call(tmp_path: Path) -> ReplayBackend:
    """A cassette of one call answered with GOOD, replayed."""
    path = tmp_path / "reply.json"
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps(GOOD)))
        record(server, path)
    return ReplayBackend(path)


def test_a_recording_replays_offline_to_the_same_result(tmp_path: Path) -> None:
    path = tmp_path / "reply.json"
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps({**GOOD, "order_id": "A-0000"})), Reply(suffix("order_id")))
        live = record(server, path)
    assert "sk-live-secret" not in path.read_text()
    cassette = json.loads(path.read_text())
    assert len(cassette["exchanges"]) == 2
    # the first stream was closed at the failing step: only that much was recorded
    first_text = "".join(c["text"] for c in cassette["exchanges"][0]["chunks"])
    assert first_text.endswith('"A-0000", ') or '"A-0000"' in first_text[-20:]

    replay = ReplayBackend(path)  # the server is gone: no network from here on
    with arq.Executor(replay) as executor:
        replayed = executor.run(SupportReply, CONTEXT)
    replay.check_all_replayed()
    assert replayed.output == live.output
    assert [a.kind for a in replayed.trace.attempts] == ["first", "repair"]


def test_a_changed_request_fails_with_a_diff(tmp_path: Path) -> None:
    replay = replay_of_one_good_call(tmp_path)
    changed = {"conversation": "Hi, my order A-1234 is late. I want a refund."}
    with arq.Executor(replay) as executor, pytest.raises(CassetteMismatch) as caught:
        executor.run(SupportReply, changed)
    message = str(caught.value)
    assert "call 1 differs from its recording" in message
    assert "-" in message
    assert "+" in message
    assert "is late" in message


def test_fewer_or_more_calls_than_recorded_fail(tmp_path: Path) -> None:
    replay = replay_of_one_good_call(tmp_path)
    with pytest.raises(CassetteMismatch, match="1 recorded call"):
        replay.check_all_replayed()

    async def two_calls() -> None:
        request = arq.PromptBuilder().build(SupportReply, CONTEXT)
        settings = arq.backends.Settings()
        for _ in range(2):
            async for _chunk in replay.stream(request, settings):
                pass

    with pytest.raises(CassetteMismatch, match="call 2 was not recorded"):
        asyncio.run(two_calls())


def test_transport_errors_are_recorded_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "reply.json"
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    retry = arq.RetryPolicy(sleep=sleep, jitter=0)
    with FakeOpenAIServer() as server:
        server.script(Status.rate_limited(retry_after=2), Reply(json.dumps(GOOD)))
        live = OpenAIBackend("fake-model", base_url=server.base_url)
        with arq.Executor(RecordingBackend(live, path), retry=retry) as executor:
            executor.run(SupportReply, CONTEXT)
    with arq.Executor(ReplayBackend(path), retry=retry) as executor:
        result = executor.run(SupportReply, CONTEXT)
    assert sleeps == [2.0, 2.0]  # the recorded Retry-After is honoured on replay too
    assert [a.kind for a in result.trace.attempts] == ["first", "retry"]


def test_a_missing_cassette_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(CassetteMismatch, match="record it once"):
        ReplayBackend(tmp_path / "none.json")


# --- the pytest plugin, as a user's suite sees it ------------------------------------------

USER_TEST = """
import json
import arq
from arq.backends import OpenAIBackend
from tests_support import SupportReply, CONTEXT, GOOD_TEXT, BASE_URL


def test_reply(arq_cassette):
    backend = arq_cassette(lambda: OpenAIBackend("fake-model", base_url=BASE_URL))
    with arq.Executor(backend) as executor:
        assert executor.run(SupportReply, CONTEXT).output.order_id == "A-1234"


def test_prompt(prompt_snapshot):
    prompt_snapshot(SupportReply, CONTEXT)


def test_scripted(scripted_backend):
    scripted_backend.script(GOOD_TEXT)
    with arq.Executor(scripted_backend) as executor:
        assert executor.run(SupportReply, CONTEXT).output.decision == "reply"


def test_server(fake_openai_server):
    fake_openai_server.script(GOOD_TEXT)
    backend = OpenAIBackend("fake-model", base_url=fake_openai_server.base_url)
    with arq.Executor(backend) as executor:
        assert executor.run(SupportReply, CONTEXT).output.answer.startswith("We are")
"""


def write_suite(pytester: pytest.Pytester, base_url: str) -> None:
    support = Path(__file__).with_name("schemas.py").read_text()
    support += f"\nCONTEXT = {CONTEXT!r}\nGOOD_TEXT = {json.dumps(GOOD)!r}\n"
    support += f"BASE_URL = {base_url!r}\n"
    pytester.makepyfile(tests_support=support, test_user=USER_TEST)


def test_the_plugin_records_then_replays_offline(pytester: pytest.Pytester) -> None:
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps(GOOD)))
        write_suite(pytester, server.base_url)
        recorded = pytester.runpytest_inprocess("--arq-record", "-k", "reply")
        recorded.assert_outcomes(passed=1, deselected=3)
        assert len(server.requests) == 1
    cassette = pytester.path / "cassettes" / "test_user" / "test_reply.json"
    assert cassette.exists()

    # the server is gone: the replay runs offline, and every fixture works
    first = pytester.runpytest_inprocess("-k", "not server")
    first.assert_outcomes(passed=2, failed=1, deselected=1)  # the new prompt snapshot fails once
    assert (pytester.path / "prompts" / "test_user" / "test_prompt.txt").exists()
    pytester.runpytest_inprocess("-k", "not server").assert_outcomes(passed=3, deselected=1)


def test_the_plugin_fails_a_drifted_request_with_a_diff(pytester: pytest.Pytester) -> None:
    with FakeOpenAIServer() as server:
        server.script(Reply(json.dumps(GOOD)))
        write_suite(pytester, server.base_url)
        pytester.runpytest_inprocess("--arq-record", "-k", "reply").assert_outcomes(passed=1)
        support = pytester.path / "tests_support.py"
        support.write_text(support.read_text().replace("never arrived", "is late"))
        drifted = pytester.runpytest_inprocess("-k", "reply")
    drifted.assert_outcomes(failed=1)
    drifted.stdout.fnmatch_lines(["*call 1 differs from its recording*", "*is late*"])


def test_the_plugin_serves_a_fake_server(pytester: pytest.Pytester) -> None:
    write_suite(pytester, "http://127.0.0.1:9/v1")
    pytester.runpytest_inprocess("-k", "server or scripted").assert_outcomes(passed=2)
