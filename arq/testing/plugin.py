"""arq's pytest plugin (registered through the `pytest11` entry point).

Options:
    --arq-record            record cassettes from the live backends (`arq_cassette`)
    --arq-update-prompts    rewrite the prompt snapshots (`prompt_snapshot`)

Fixtures:
    fake_openai_server      a running `FakeOpenAIServer` on 127.0.0.1
    scripted_backend        an empty `ScriptedBackend`; queue replies with `.script(...)`
    arq_cassette            `arq_cassette(make_live_backend)`: records with --arq-record,
                            else replays `cassettes/<module>/<test>.json` next to the test
    prompt_snapshot         `prompt_snapshot(schema, context)` compares the rendered prompt
                            with `prompts/<module>/<test>.txt` next to the test
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from arq.backends.base import Backend
from arq.schema import Reasoning
from arq.testing.asserts import assert_prompt_matches
from arq.testing.cassette import RecordingBackend, ReplayBackend
from arq.testing.scripted import ScriptedBackend
from arq.testing.server import FakeOpenAIServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("arq")
    group.addoption(
        "--arq-record",
        action="store_true",
        help="record arq cassettes from the live backends instead of replaying them",
    )
    group.addoption(
        "--arq-update-prompts", action="store_true", help="rewrite arq's prompt snapshots"
    )


def _test_file(request: pytest.FixtureRequest, folder: str, suffix: str) -> Path:
    test_path = Path(str(request.node.path))
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    return test_path.parent / folder / test_path.stem / f"{name}{suffix}"


@pytest.fixture
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """A real OpenAI-compatible server on loopback; script its replies with `.script()`."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def scripted_backend() -> ScriptedBackend:
    """A backend that streams the replies you queue with `.script(...)`, one per call."""
    return ScriptedBackend()


@pytest.fixture
def arq_cassette(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[Callable[[], Backend]], Backend]]:
    """Record (with --arq-record) or replay the calls of a test to its cassette file."""
    path = _test_file(request, "cassettes", ".json")
    record = bool(request.config.getoption("--arq-record"))
    replays: list[ReplayBackend] = []

    def use(make_live: Callable[[], Backend]) -> Backend:
        if record:
            return RecordingBackend(make_live(), path)
        replay = ReplayBackend(path)
        replays.append(replay)
        return replay

    yield use
    for replay in replays:
        replay.check_all_replayed()


@pytest.fixture
def prompt_snapshot(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`prompt_snapshot(schema, context)`: the rendered prompt must match its snapshot."""
    update = bool(request.config.getoption("--arq-update-prompts"))
    count = 0

    def check(schema: type[Reasoning], context: Any = None, **options: Any) -> None:
        nonlocal count
        count += 1
        suffix = ".txt" if count == 1 else f".{count}.txt"
        path = _test_file(request, "prompts", suffix)
        assert_prompt_matches(schema, context, path, update=update, **options)

    return check
