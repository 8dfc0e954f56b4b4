"""The request lines of a batch job: the bodies `Executor.run` would send, not streamed.

Each body is `OpenAIBackend.payload` of the request the prompt builder renders (the first
request, or the repair `arq.repair` plans), with the sampling settings of the item's call
number (`RunConfig.settings_for`), less `stream` and `stream_options`: a batch engine
answers each line whole. Repairs ask for a suffix (the kept steps go back as the model's
earlier answer), since a batch engine does not continue an assistant message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from arq.backends.base import Settings as Sampling
from arq.backends.openai import PROFILES, OpenAIBackend
from arq.batch.manifest import Settings, custom_id
from arq.errors import InvalidArgumentError, OutputError
from arq.prompt import PromptBuilder, Request
from arq.repair import Repairs
from arq.retry import RetryPolicy
from arq.run.config import RunConfig
from arq.schema import Reasoning
from arq.trace import AttemptKind

__all__ = ["RequestMaker", "request_line"]

URL = "/v1/chat/completions"


class RequestMaker:
    """Builds the bodies of one job's requests.

    Args:
        schema: The job's schema.
        settings: The job's settings.
    """

    def __init__(self, schema: type[Reasoning], settings: Settings) -> None:
        if settings.profile not in PROFILES:
            raise InvalidArgumentError(
                f"unknown profile {settings.profile!r}; profiles: {', '.join(sorted(PROFILES))}"
            )
        self.schema = schema
        self.settings = settings
        capabilities = replace(PROFILES[settings.profile], prefill=False)
        # payload() is pure: this backend never connects (no base URL is ever called)
        self.backend = OpenAIBackend(
            settings.model,
            base_url="http://127.0.0.1:9/v1",
            capabilities=capabilities,
            max_tokens_param=settings.max_tokens_param,
        )
        repair_temperature = settings.repair_temperature
        self.config = RunConfig(
            self.backend,
            builder=PromptBuilder(),
            max_repairs=settings.max_repairs,
            retry=RetryPolicy(attempts=settings.retries),
            settings=Sampling(
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                seed=settings.seed,
            ),
            repair_temperature=(
                settings.temperature if repair_temperature is None else repair_temperature
            ),
        )

    @property
    def tolerant(self) -> bool:
        """The answers are unconstrained: prose around the object is skipped."""
        return self.backend.capabilities.output == "prompt"

    def first(self, context: Mapping[str, Any]) -> tuple[Request, dict[str, Any]]:
        """An item's first request and its body."""
        request = self.config.builder.build(self.schema, context)
        return request, self.body(request, "first", 1)

    def repair(
        self,
        context: Mapping[str, Any],
        repairs: Repairs,
        accepted: Mapping[str, Any],
        failure: OutputError,
        number: int,
    ) -> tuple[Request, dict[str, Any]]:
        """The repair request after `failure`, as call `number` of the item, and its body:
        the steps in `accepted` kept, the rest asked for again (`Repairs.plan`)."""
        base = self.config.builder.build(self.schema, context)
        plan = repairs.plan(
            base.steps, base.allowed, accepted=accepted, failure=failure, prefill=False
        )
        request = self.config.builder.render_repair(base, plan)
        return request, self.body(request, "repair", number)

    def body(self, request: Request, kind: AttemptKind, number: int) -> dict[str, Any]:
        """The body of call `number` of an item, sending `request`, not streamed."""
        body = self.backend.payload(request, self.config.settings_for(kind, number))
        body.pop("stream", None)
        body.pop("stream_options", None)
        return body


def request_line(tag: str, round_number: int, item: str, body: Mapping[str, Any]) -> str:
    """One line of a batch input file."""
    line = {
        "custom_id": custom_id(tag, round_number, item),
        "method": "POST",
        "url": URL,
        "body": body,
    }
    return json.dumps(line, ensure_ascii=False) + "\n"
