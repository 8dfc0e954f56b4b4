"""Tool-call decision: pick a tool, check each required argument, then call it or ask.

For an assistant with tools that must not invent arguments. For each required argument of
the chosen tool the model says whether the conversation states its value, and quotes the
value when it does. The tool may be called only when every required argument is known;
otherwise the assistant asks the user for the missing ones.

Context keys:
    conversation: the conversation so far (text, or a list of {"role", "content"} messages).
    tools: a list of {"id", "description", "required"} mappings, where "required" lists
        the names of the tool's required arguments.

`ToolCallDecision` checks the tool id against the context's tools. `for_tools(tools)` also
makes the id an enum in the JSON Schema, for providers and grammars that enforce it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, Field, create_model, model_validator
from pydantic.fields import FieldInfo

import arq

__all__ = ["ArgumentCheck", "ToolCallDecision", "for_tools"]

Quote = Annotated[str, Field(max_length=200), arq.verbatim_in("conversation")]


def _required_arguments(context: Any, tool: str) -> list[str]:
    """The required argument names of `tool`, from the context's tool list."""
    tools = context.get("tools") if isinstance(context, Mapping) else None
    if not isinstance(tools, Sequence) or isinstance(tools, str):
        raise arq.ContextError(
            "ToolCallDecision needs context['tools']: a list of "
            "{'id', 'description', 'required'} mappings"
        )
    for entry in tools:
        if isinstance(entry, Mapping) and str(entry.get("id")) == tool:
            return [str(name) for name in entry.get("required") or ()]
    return []  # unreachable after the `one_of` check on the tool step


class ArgumentCheck(BaseModel):
    """One required argument of the chosen tool: stated in the conversation, or a guess?"""

    name: str = Field(description="The argument's name.", max_length=64)
    known: bool = Field(
        description="Does the conversation state its value? false if you would have to guess."
    )
    value: Quote | None = Field(
        description="Its value, copied word for word from the conversation; null if not known."
    )

    @model_validator(mode="after")
    def value_only_when_known(self) -> ArgumentCheck:
        if self.known and self.value is None:
            raise ValueError(f"{self.name} is known: copy its value from the conversation")
        if not self.known and self.value is not None:
            raise ValueError(f"{self.name} is not known: its value must be null, not a guess")
        return self


class ToolCallDecision(arq.Reasoning):
    """Decide whether to call a tool for the user's last message now, or ask the user first.

    Pick the tool that does what the user asks. For each of its required arguments, say
    whether the conversation states the value, and copy the value word for word if it does.
    Never guess a value: call the tool only when every required argument is known, and
    otherwise ask the user for the missing ones.
    """

    request: str = arq.query(
        "What does the user want done, in the last message?", max_length=200, max_chunks=50
    )
    tool: Annotated[str, arq.one_of("tools")] = arq.query(
        "Which tool does that? Give its id.", instruction="Use an id from the tools list."
    )
    arguments: list[ArgumentCheck] = arq.query(
        "For each required argument of that tool: is its value stated in the conversation, "
        "and what is it?",
        instruction=(
            "List every required argument of the tool exactly once. A value you would have "
            "to guess is not known."
        ),
        max_length=8,
    )
    decision: Literal["call", "ask"] = arq.answer(
        "Call the tool now, or ask the user for the missing arguments?",
        instruction="Call only when every required argument is known.",
    )
    ask_user: Annotated[str, Field(max_length=200)] | None = arq.answer(
        "When asking: the question to the user, naming what is missing. null when calling.",
        max_chunks=60,
    )

    @arq.check("tool", "arguments")
    def every_required_argument_once(
        tool: str, arguments: list[ArgumentCheck], context: Mapping[str, Any]
    ) -> None:
        required = _required_arguments(context, tool)
        problem = _coverage(required, [a.name for a in arguments])
        if problem:
            names = ", ".join(required) or "none"
            raise ValueError(f"{problem}; the required arguments of {tool} are: {names}")

    @arq.check("arguments", "decision")
    def call_only_with_known_arguments(arguments: list[ArgumentCheck], decision: str) -> None:
        missing = [a.name for a in arguments if not a.known]
        if decision == "call" and missing:
            raise ValueError(
                f"cannot call with {', '.join(missing)} unknown: a guessed argument is not "
                f"allowed, ask the user for it"
            )
        if decision == "ask" and not missing:
            raise ValueError("every required argument is known: call the tool")

    @arq.check("decision", "ask_user")
    def question_only_when_asking(decision: str, ask_user: str | None) -> None:
        if decision == "ask" and not (ask_user or "").strip():
            raise ValueError("write the question that asks the user for the missing arguments")
        if decision == "call" and ask_user is not None:
            raise ValueError("the tool is called: ask_user must be null")


def _coverage(expected: Sequence[str], got: Sequence[str]) -> str | None:
    missing = [name for name in expected if name not in got]
    repeated = sorted({name for name in got if got.count(name) > 1})
    unknown = list(dict.fromkeys(name for name in got if name not in expected))
    parts = [
        f"{what} {', '.join(names)}"
        for what, names in (("missing", missing), ("repeated", repeated), ("unknown", unknown))
        if names
    ]
    return "; ".join(parts) or None


def for_tools(tools: Sequence[Mapping[str, Any]]) -> type[ToolCallDecision]:
    """`ToolCallDecision` with the tool id narrowed to an enum of these tools' ids.

    `tools` is the same list the run's context carries under "tools".
    """
    ids = tuple(str(tool["id"]) for tool in tools)
    if not ids:
        raise arq.SchemaError("for_tools: no tools given")
    info = ToolCallDecision.model_fields["tool"]
    enum = cast(Any, Literal.__getitem__(ids))
    fields: dict[str, Any] = {"tool": (enum, FieldInfo.merge_field_infos(info))}
    return create_model(
        "ToolCallDecision",
        __base__=ToolCallDecision,
        __module__=__name__,
        __doc__=ToolCallDecision.__doc__,
        **fields,
    )
