"""Re-encoded weights: the bundled Q4_1 model runs as Q8_0, converted when it loads (or once
into a cache the user names), leaving no file behind otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

import arq  # noqa: E402
from arq import Reasoning, answer  # noqa: E402
from arq.backends import LlamaCppBackend  # noqa: E402
from arq.backends.llamacpp import resolve_model_path  # noqa: E402
from arq.backends.llamacpp.native import last_logits as model_logits  # noqa: E402
from arq.backends.llamacpp.weights import cache_dir, reencoded  # noqa: E402

FILE_TYPE_Q8_0 = "7"  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0, as the GGUF metadata writes it


class Tiny(Reasoning):
    reply: str = answer("Say hello.")


REQUEST = arq.PromptBuilder().build(Tiny, {})


@pytest.fixture(scope="module")
def source() -> Path:
    """The bundled model file, as shipped (Q4_1)."""
    return resolve_model_path()


@pytest.fixture
def quiet() -> Iterator[None]:
    """llama.cpp logs each converted tensor unless its logger is raised (as the backend does)."""
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def last_logits(path: Path, text: bytes) -> np.ndarray:
    model = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False)
    try:
        model.eval(model.tokenize(text, add_bos=False, special=True))
        return model_logits(llama_cpp, model).astype(np.float64)  # as arq's decoding reads them
    finally:
        model.close()


@pytest.mark.local
def test_the_bundled_model_runs_re_encoded_as_q8_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARQ_MODEL", raising=False)
    local = LlamaCppBackend()
    try:
        assert local.weights == "Q8_0"
        assert local.model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file shipped
        assert local.name == "SmolLM2-135M-Instruct.Q4_1 as Q8_0"  # traces say what ran
        local.prompt_tokens(REQUEST)  # loads the model
        assert local._llm.metadata["general.file_type"] == FILE_TYPE_Q8_0
        assert Path(local._llm.model_path).parent == cache_dir()
    finally:
        asyncio.run(local.aclose())


def test_a_model_given_runs_as_it_is(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert LlamaCppBackend(source).weights is None
    monkeypatch.setenv("ARQ_MODEL", str(source))
    assert LlamaCppBackend().weights is None
    assert LlamaCppBackend(weights="F16").weights == "F16"  # unless asked


@pytest.mark.local
def test_the_bundled_model_can_run_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARQ_MODEL", raising=False)
    local = LlamaCppBackend(weights=None)
    try:
        local.prompt_tokens(REQUEST)
        assert local._llm.model_path == str(local.model_path)
        assert local.name == "SmolLM2-135M-Instruct.Q4_1"
    finally:
        asyncio.run(local.aclose())


@pytest.mark.parametrize("weights", ["Q4_1", "q8_0", "", "auto "])
def test_unknown_weights_are_refused(weights: str) -> None:
    with pytest.raises(ValueError, match="weights must be one of"):
        LlamaCppBackend(weights=weights)


@pytest.mark.local
def test_the_copy_is_the_same_model(source: Path, tmp_path: Path, quiet: None) -> None:
    copy = reencoded(llama_cpp, source, "Q8_0", tmp_path)
    text = b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    shipped, converted = last_logits(source, text), last_logits(copy, text)
    cosine = shipped @ converted / np.linalg.norm(shipped) / np.linalg.norm(converted)
    assert cosine > 0.99
    assert int(np.argmax(shipped)) == int(np.argmax(converted))
    # not a copy of the bytes: Q8_0 takes 8.5 bits a weight, Q4_1 5
    assert copy.stat().st_size > 1.4 * source.stat().st_size


@pytest.mark.local
def test_a_copy_is_made_once_and_again_when_its_source_changes(
    source: Path, tmp_path: Path, quiet: None
) -> None:
    model = tmp_path / "model.gguf"
    shutil.copyfile(source, model)  # a file of its own, whose modification time can change
    cache = tmp_path / "cache"
    first = reencoded(llama_cpp, model, "Q8_0", cache)
    made = first.stat().st_mtime_ns
    assert reencoded(llama_cpp, model, "Q8_0", cache) == first
    assert first.stat().st_mtime_ns == made  # found, not converted again
    assert [p.name for p in cache.iterdir()] == [first.name]  # no partial file left
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    assert reencoded(llama_cpp, link, "Q8_0", cache) == first  # the file, not its name
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = reencoded(llama_cpp, model, "Q8_0", cache)
    assert second != first
    assert second.is_file()


def test_a_copy_that_cannot_be_made_leaves_the_file_as_it_is(
    source: Path, tmp_path: Path, quiet: None
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    with pytest.warns(RuntimeWarning, match="could not re-encode .* running the file as it is"):
        assert reencoded(llama_cpp, source, "Q8_0", blocked) == source
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    cache = tmp_path / "cache"
    with pytest.warns(RuntimeWarning, match="conversion failed"):
        assert reencoded(llama_cpp, broken, "Q8_0", cache) == broken
    assert list(cache.iterdir()) == []  # the partial file is removed


@pytest.mark.local
def test_a_backend_whose_copy_cannot_be_made_runs_the_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("ARQ_CACHE_DIR", str(blocked))
    monkeypatch.delenv("ARQ_MODEL", raising=False)
    local = LlamaCppBackend()
    try:
        with pytest.warns(RuntimeWarning, match="could not re-encode"):
            local.prompt_tokens(REQUEST)  # loads, on the worker thread
        assert local._llm.model_path == str(local.model_path)
        assert local.weights is None
        assert local.name == "SmolLM2-135M-Instruct.Q4_1"
    finally:
        asyncio.run(local.aclose())


def test_the_cache_folder_is_the_users_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARQ_CACHE_DIR", str(tmp_path / "arq-cache"))
    assert cache_dir() == tmp_path / "arq-cache"
    monkeypatch.delenv("ARQ_CACHE_DIR")
    assert cache_dir() is None


@pytest.mark.local
def test_without_a_cache_the_backend_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    monkeypatch.delenv("ARQ_CACHE_DIR")
    monkeypatch.delenv("ARQ_MODEL", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    local = LlamaCppBackend()
    try:
        assert local.prompt_tokens(REQUEST)  # loads, on the worker thread
        assert local.weights == "Q8_0"
        assert list(scratch.iterdir()) == []
        assert list(home.iterdir()) == []
        text = asyncio.run(first_text(local))
        assert text.startswith("{")
    finally:
        asyncio.run(local.aclose())


async def first_text(backend: LlamaCppBackend) -> str:
    from arq.backends import Settings

    async for chunk in backend.stream(REQUEST, Settings(max_tokens=3, temperature=0)):
        return chunk.text
    return ""
