"""Build the request for a reasoning schema: sections rendered by Jinja2 into chat messages.

A prompt is a list of sections (`system`, `output_format`, `examples`, `context` by
default). Each renders a template; consecutive sections with the same role are joined into
one message and empty ones are dropped. Package templates are trusted; anything a user
gives (`templates=`, `template_dir=`, inline section sources) runs in Jinja's sandbox.
Context values are template *variables*, never template source, so text such as
`{{ 7*7 }}` inside them reaches the prompt literally.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel

from arq.checks import AllowedValues, allowed_values
from arq.checks.context import context_keys
from arq.errors import ContextError, InvalidArgumentError, TemplateError
from arq.jsonschema import json_schema
from arq.prompt.context import context_text
from arq.prompt.skeleton import example_json, render_skeleton
from arq.schema import Reasoning, _cached, steps

if TYPE_CHECKING:
    from arq.repair import RepairPlan

__all__ = ["DEFAULT_SECTIONS", "Message", "PromptBuilder", "Request", "Section"]

Role = Literal["system", "user"]


class Message(TypedDict):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Request:
    """What the executor sends; backends map `output_schema` to their own wire form.

    Attributes:
        messages: The chat messages.
        schema: The reasoning schema the answer is checked against.
        output_schema: JSON Schema (plain dialect) of the object asked for: every step,
            or, in a repair, the failing step and those after it.
        steps: The names of the steps asked for, in order.
        prefill: JSON text the answer continues (a repair on a backend that accepts an
            assistant prefix): the steps kept so far, ready for the next key. Empty when
            the answer starts a new object.
        rejected: JSON texts of values the first step asked for already had rejected in
            this run (`arq.repair` decides which). A backend that steers decoding
            (`LlamaCppBackend`) keeps the new value off them; others rely on the repair turn.
        allowed: What the context checks (`one_of`, `date_in`, `verbatim_in`) of the
            string steps asked for allow, by step; a backend that steers decoding holds the
            values to it. Derived from the schema and the context, so `to_dict` leaves it out.
        metadata: Names of the schema, steps and rendered sections; the repair, if any.
    """

    messages: list[Message]
    schema: type[Reasoning]
    output_schema: dict[str, Any]
    steps: tuple[str, ...] = ()
    prefill: str = ""
    rejected: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    allowed: Mapping[str, AllowedValues] = field(default_factory=dict)

    def prompt_chars(self) -> int:
        """Characters of the prompt: the messages' texts and the prefill."""
        return sum(len(m["content"]) for m in self.messages) + len(self.prefill)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot, with the schema given by its name."""
        snapshot: dict[str, Any] = {
            "schema": self.schema.__name__,
            "messages": [dict(m) for m in self.messages],
            "output_schema": copy.deepcopy(self.output_schema),
            "metadata": copy.deepcopy(self.metadata),
        }
        if self.prefill:
            snapshot["prefill"] = self.prefill
        if self.rejected:
            snapshot["rejected"] = list(self.rejected)
        return snapshot


@dataclass(frozen=True)
class Section:
    """A named part of the prompt.

    `template` is a template name (a key of `templates=`, a file of `template_dir=` or a
    package template, such as ``"system.jinja"``) if it looks like a file name ending in
    `.jinja`, and otherwise inline template source.
    """

    name: str
    template: str
    role: Role

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgumentError("a section needs a name")
        if self.role not in ("system", "user"):
            raise InvalidArgumentError(f"section {self.name!r}: role must be 'system' or 'user'")


DEFAULT_SECTIONS: tuple[Section, ...] = (
    Section("system", "system.jinja", "system"),
    Section("output_format", "output_format.jinja", "system"),
    Section("examples", "examples.jinja", "system"),
    Section("context", "context.jinja", "user"),
)
"""The sections `PromptBuilder()` renders, in order."""

_TEMPLATE_NAME = re.compile(r"[\w.\-/]+\.jinja2?")
_SETTINGS: dict[str, Any] = {
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
    "keep_trailing_newline": True,
    "autoescape": False,
    "auto_reload": False,  # compiled templates are kept: no stat() on each build
}
_FILTERS = {"as_text": context_text}

_PACKAGE_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("arq.prompt", "templates"), **_SETTINGS
)
_PACKAGE_ENV.filters.update(_FILTERS)


class PromptBuilder:
    """Renders a schema, a context and examples into a `Request`.

    Builders are immutable: `add_section`, `replace_section`, `remove_section` and
    `reorder` return a new builder and leave this one unchanged. Compiled templates are
    cached and shared between a builder and the builders derived from it.
    """

    def __init__(
        self,
        *,
        sections: Sequence[Section] | None = None,
        templates: Mapping[str, str] | None = None,
        template_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._sections = _checked(DEFAULT_SECTIONS if sections is None else sections)
        self._templates = dict(templates or {})
        loaders: list[jinja2.BaseLoader] = [jinja2.DictLoader(self._templates)]
        if template_dir is not None:
            loaders.append(jinja2.FileSystemLoader(template_dir))
        self._sandbox = SandboxedEnvironment(loader=jinja2.ChoiceLoader(loaders), **_SETTINGS)
        self._sandbox.filters.update(_FILTERS)
        self._cache: dict[tuple[str, ...], tuple[jinja2.Template, str]] = {}

    @property
    def sections(self) -> tuple[Section, ...]:
        """The sections, in prompt order."""
        return self._sections

    # --- editing: each returns a new builder -------------------------------------------

    def add_section(
        self, section: Section, *, before: str | None = None, after: str | None = None
    ) -> PromptBuilder:
        """A builder with `section` added (at the end, or before/after the named section)."""
        if before is not None and after is not None:
            raise InvalidArgumentError("add_section: give `before` or `after`, not both")
        anchor = before if before is not None else after
        end = len(self._sections)
        index = end if anchor is None else self._index(anchor) + (after is not None)
        return self._with([*self._sections[:index], section, *self._sections[index:]])

    def replace_section(self, name: str, section: Section) -> PromptBuilder:
        """A builder with the section called `name` replaced by `section`."""
        index = self._index(name)
        return self._with([*self._sections[:index], section, *self._sections[index + 1 :]])

    def remove_section(self, name: str) -> PromptBuilder:
        """A builder without the section called `name`."""
        index = self._index(name)
        return self._with([*self._sections[:index], *self._sections[index + 1 :]])

    def reorder(self, names: Sequence[str]) -> PromptBuilder:
        """A builder with the sections in the order of `names` (every section, once)."""
        known = [s.name for s in self._sections]
        if sorted(names) != sorted(known):
            raise InvalidArgumentError(
                f"reorder: give each section once, {known}; got {list(names)}"
            )
        return self._with([self._sections[self._index(n)] for n in names])

    def _index(self, name: str) -> int:
        names = [s.name for s in self._sections]
        if name not in names:
            raise InvalidArgumentError(f"no section {name!r}; sections are {', '.join(names)}")
        return names.index(name)

    def _with(self, sections: Sequence[Section]) -> PromptBuilder:
        clone = copy.copy(self)
        clone._sections = _checked(sections)
        return clone

    # --- rendering ------------------------------------------------------------------------

    def build(
        self,
        schema: type[Reasoning],
        context: Mapping[str, Any] | None = None,
        *,
        examples: Sequence[BaseModel | Mapping[str, Any]] = (),
    ) -> Request:
        """Render every section and merge them into chat messages.

        Raises:
            ContextError: the context lacks a key that a step's checks read (`verbatim_in`,
                `one_of`, `covers`, `date_in`); the error names each such key and its steps.
            TemplateError: a template is missing, has a syntax error, uses an undefined
                variable or does something the sandbox forbids.
            InvalidArgumentError: an example's keys are not exactly the schema's steps.
        """
        _check_context(schema, context)
        variables = self._variables(schema, context, examples)
        messages: list[Message] = []
        rendered: list[str] = []
        for section in self._sections:
            text = self._render(section, variables).strip()
            if not text:
                continue
            rendered.append(section.name)
            if messages and messages[-1]["role"] == section.role:
                messages[-1]["content"] += "\n\n" + text
            else:
                messages.append({"role": section.role, "content": text})
        output_schema = json_schema(schema, dialect="json-schema")
        return Request(
            messages=messages,
            schema=schema,
            output_schema=output_schema,
            steps=tuple(s.name for s in steps(schema)),
            metadata={
                "schema": schema.__name__,
                "steps": [s.name for s in steps(schema)],
                "sections": rendered,
            },
            allowed=allowed_values(
                {s.name: s.field for s in steps(schema)},
                context,
                output_schema.get("properties"),
            ),
        )

    def render_repair(self, request: Request, plan: RepairPlan) -> Request:
        """Render `plan` as the request that follows `request`: the repair turn
        (`repair.jinja`), and the kept steps as a prefill or as an earlier answer."""
        remaining = list(plan.remaining)
        variables = {
            "step": plan.step,
            "kept": list(plan.kept),
            "remaining": list(request.steps) if plan.prefill else remaining,
            "failure": plan.failure,
            "evidence": list(plan.evidence),
            "output_format": render_skeleton(request.schema, remaining),
            "prefill": bool(plan.prefill),
        }
        note = self._render(Section("repair", "repair.jinja", "user"), variables).strip()
        messages = [dict(m) for m in request.messages]  # copies: requests are snapshots
        if plan.prefill:
            last = messages[-1]
            if last["role"] == "user":
                last["content"] = f"{last['content']}\n\n{note}"
            else:
                messages.append({"role": "user", "content": note})
        else:
            if plan.earlier_answer:
                messages.append({"role": "assistant", "content": plan.earlier_answer})
            messages.append({"role": "user", "content": note})
        return Request(
            messages=cast(list[Message], messages),
            schema=request.schema,
            output_schema=json_schema(request.schema, "json-schema", steps=remaining),
            steps=plan.remaining,
            prefill=plan.prefill,
            rejected=plan.rejected,
            metadata={
                **request.metadata,
                "repair": {
                    "step": plan.step.name,
                    "kept": list(plan.kept),
                    "prefill": bool(plan.prefill),
                },
            },
            allowed=dict(plan.allowed),
        )

    def render_output_format(self, schema: type[Reasoning]) -> str:
        """The output-format section alone (the bare skeleton if that section was removed)."""
        variables = self._variables(schema, None, ())
        section = next((s for s in self._sections if s.name == "output_format"), None)
        if section is None:
            return str(variables["output_format"])
        return self._render(section, variables).strip()

    def _variables(
        self,
        schema: type[Reasoning],
        context: Mapping[str, Any] | None,
        examples: Sequence[BaseModel | Mapping[str, Any]],
    ) -> dict[str, Any]:
        doc = schema.__dict__.get("__doc__")
        return {
            "schema_name": schema.__name__,
            "task": inspect.cleandoc(doc) if isinstance(doc, str) else "",
            "steps": list(steps(schema)),
            "output_format": render_skeleton(schema),
            "context": dict(context or {}),
            "examples": [example_json(schema, example) for example in examples],
        }

    def _render(self, section: Section, variables: Mapping[str, Any]) -> str:
        template, label = self._template(section)
        try:
            return template.render(variables)
        except jinja2.UndefinedError as exc:
            raise _error(label, template, exc, f"undefined variable: {exc.message}") from exc
        except jinja2.exceptions.SecurityError as exc:
            raise _error(label, template, exc, f"blocked by the sandbox: {exc}") from exc
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise _error(label, template, exc, f"{type(exc).__name__}: {exc}") from exc

    def _template(self, section: Section) -> tuple[jinja2.Template, str]:
        """The compiled template of a section and the name errors give it (cached)."""
        source = section.template
        is_name = source in self._templates or _TEMPLATE_NAME.fullmatch(source) is not None
        key = ("name", source) if is_name else ("source", section.name, source)
        if key not in self._cache:
            self._cache[key] = self._load(source) if is_name else self._compile(section)
        return self._cache[key]

    def _load(self, name: str) -> tuple[jinja2.Template, str]:
        try:
            with contextlib.suppress(jinja2.TemplateNotFound):  # user templates win
                return self._sandbox.get_template(name), name
            return _PACKAGE_ENV.get_template(name), name
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                f"template {name!r} not found in templates=, template_dir= or arq's "
                f"templates ({', '.join(_PACKAGE_ENV.list_templates())})",
                template=name,
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_error(name, exc) from exc

    def _compile(self, section: Section) -> tuple[jinja2.Template, str]:
        label = f"<section {section.name}>"
        env = self._sandbox
        try:
            code = env.compile(section.template, name=label, filename=label)
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_error(label, exc) from exc
        return env.template_class.from_code(env, code, env.make_globals(None)), label

    def reask(self, request: Request, answer: str, feedback: Sequence[str]) -> Request:
        """`request` again, after the rejected `answer` and its `feedback` (each text once).

        The whole-object re-ask of other structured-output libraries, a baseline to
        compare repairs with: the whole object is asked for again. Built from `request`
        alone, so the prompt does not grow with the re-asks.
        """
        variables = {"feedback": list(dict.fromkeys(feedback)), "keys": list(request.steps)}
        note = self._render(Section("reask", "reask.jinja", "user"), variables).strip()
        messages: list[Message] = [
            *request.messages,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": note},
        ]
        return replace(request, messages=messages, metadata={**request.metadata, "reask": True})


def _check_context(schema: type[Reasoning], context: Mapping[str, Any] | None) -> None:
    """Raise `ContextError` if `context` lacks a key that the checks of `schema` read."""
    needed = _cached(
        schema, "context_keys", lambda: context_keys({s.name: s.field for s in steps(schema)})
    )
    missing = {key: names for key, names in needed.items() if key not in (context or {})}
    if not missing:
        return
    lacks = "; ".join(
        f"{key!r} (read by the checks of {'steps' if len(names) > 1 else 'step'} "
        f"{', '.join(names)})"
        for key, names in missing.items()
    )
    example = ", ".join(f"{key!r}: ..." for key in missing)
    raise ContextError(
        f"{schema.__name__}: the context lacks {lacks}; pass context={{{example}}}",
        missing=missing,
    )


def _checked(sections: Sequence[Section]) -> tuple[Section, ...]:
    names = [s.name for s in sections]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidArgumentError(f"section names must be unique: {', '.join(repeated)} repeated")
    return tuple(sections)


def _syntax_error(label: str, exc: jinja2.TemplateSyntaxError) -> TemplateError:
    return TemplateError(
        f"template {label!r}, line {exc.lineno}: syntax error: {exc.message}", template=label
    )


def _error(label: str, template: jinja2.Template, exc: Exception, what: str) -> TemplateError:
    """A render error, with the template line found in Jinja's rewritten traceback."""
    filename, line, tb = template.filename or "<template>", None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    at = f", line {line}" if line is not None else ""
    hint = " (context values are available as context.<key>)" if "undefined" in what else ""
    return TemplateError(f"template {label!r}{at}: {what}{hint}", template=label)
