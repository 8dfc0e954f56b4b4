"""Checking each step as soon as it is complete.

A step is checked against everything the schema says about it: its type, its constraints
and the schema's own field validators, including those that read earlier steps
(`info.data`) and the run's context (`info.context`). Cross-step checks run as soon as
every step they read is accepted.

How one field is validated alone: from the schema's Pydantic core schema we build, per
step, a `model-fields` validator holding the earlier steps as pass-through `any` fields and
this step with its real schema. Validating `{earlier..., step: value}` then runs exactly the
field's own validators, with `info.data` holding the accepted earlier values, once, in
linear total time, and without the model-level validators, which need the whole object
and run in `StepChecker.finish`.

A step must also be writable as JSON: a string holding an unpaired UTF-16 surrogate
(`"\\ud800"`, which UTF-8 cannot encode) or a number that is not finite (`1e999`, or
`"inf"` read into a `float`) is an invalid step, in the value as written and as validated,
nested values included.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import CoreConfig, CoreSchema, SchemaValidator

from arq.checks import CrossCheck
from arq.checks.severity import AdvisoryFailure
from arq.errors import NO_VALUE, InvalidArgumentError, SchemaError, StepError
from arq.outcome import Unconverged
from arq.schema import Reasoning, Step, _cached, cross_checks, steps

SchemaT = TypeVar("SchemaT", bound=Reasoning)

__all__ = ["StepChecker", "validate_output"]

_MODEL_WRAPPERS = {"function-before", "function-after", "function-wrap"}


def _model_fields_schema(schema: type[Reasoning]) -> tuple[dict[str, Any], Any, CoreConfig]:
    """Find the schema's `model-fields` core schema, its definitions and its config."""
    core: dict[str, Any] = dict(schema.__pydantic_core_schema__)
    definitions: list[Any] = []
    if core["type"] == "definitions":
        definitions = core["definitions"]
        core = core["schema"]
    while True:
        if core["type"] == "definition-ref":
            ref = core["schema_ref"]
            core = next(d for d in definitions if d.get("ref") == ref)
        elif core["type"] in _MODEL_WRAPPERS:
            core = core["schema"]
        else:
            break
    if core["type"] != "model" or core["schema"]["type"] != "model-fields":
        raise SchemaError(
            f"{schema.__name__}: cannot check its steps one by one (core schema "
            f"{core['type']!r}); custom model-level core schemas are not supported",
            schema=schema.__name__,
        )
    return core["schema"], definitions, cast(CoreConfig, core.get("config") or {})


class _StepValidators:
    """Per-step validators of one schema, built on first use.

    Earlier steps are pass-through fields (keeping their defaults, so a skipped optional
    step shows its default in `info.data`, as in whole-model validation). A skipped
    required step is left out, again as Pydantic would; such a validator is built for
    that case alone.
    """

    def __init__(self, schema: type[Reasoning]) -> None:
        fields_schema, self._definitions, self._config = _model_fields_schema(schema)
        self._fields: dict[str, Any] = fields_schema["fields"]
        self._model_name = fields_schema.get("model_name", schema.__name__)
        self._built: dict[tuple[str, frozenset[str]], SchemaValidator] = {}

    def get(self, name: str, present: Mapping[str, Any]) -> SchemaValidator:
        names = list(self._fields)
        earlier = names[: names.index(name)]
        skipped = frozenset(
            n for n in earlier if n not in present and _is_required(self._fields[n])
        )
        key = (name, skipped)
        if key not in self._built:
            fields = {n: _passthrough(self._fields[n]) for n in earlier if n not in skipped}
            core: dict[str, Any] = {
                "type": "model-fields",
                "fields": {**fields, name: self._fields[name]},
                "model_name": self._model_name,
            }
            if self._definitions:
                core = {"type": "definitions", "schema": core, "definitions": self._definitions}
            self._built[key] = SchemaValidator(cast(CoreSchema, core), self._config)
        return self._built[key]


def _is_required(field: Mapping[str, Any]) -> bool:
    return bool(field["schema"]["type"] != "default")


def _passthrough(field: Mapping[str, Any]) -> dict[str, Any]:
    inner = field["schema"]
    if inner["type"] == "default":
        return {"type": "model-field", "schema": {**inner, "schema": {"type": "any"}}}
    return {"type": "model-field", "schema": {"type": "any"}}


def _step_validators(schema: type[Reasoning]) -> _StepValidators:
    return _cached(schema, "step_validators", lambda: _StepValidators(schema))


_MESSAGE_PREFIXES = ("Value error, ", "Assertion failed, ")


def _error_dicts(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without URLs or exception objects, so traces stay serialisable."""
    return [
        {
            "type": e["type"],
            "loc": tuple(e["loc"]),
            "msg": _plain(e["msg"]),
            "input": e.get("input"),
        }
        for e in exc.errors(include_url=False, include_context=False)
    ]


def _plain(message: str) -> str:
    """Drop Pydantic's "Value error, " prefix: the model needs the check's own words."""
    for prefix in _MESSAGE_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _location(loc: tuple[Any, ...]) -> str:
    text = str(loc[0]) if loc else ""
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _json_problem(value: Any, loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The first string or number of `value` that JSON text cannot hold, as an error dict.

    Nearly every value is clean and passes `json.dumps` at C speed; only a value it refuses
    is walked, to find where the problem is.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, skipkeys=True, default=_parts)
        text.encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return _find_json_problem(value, loc)
    return None


def _parts(value: Any) -> Any:
    """What `json.dumps` should look into for an object it does not know (None: nothing)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not a finite number")
        return None
    return _members(value)


def _members(value: Any) -> Any:
    """The values inside a model, a dataclass or a set; None for any other object."""
    if isinstance(value, BaseModel):
        return {**value.__dict__, **(value.__pydantic_extra__ or {})}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, set | frozenset):
        return list(value)
    return None


def _find_json_problem(value: Any, loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """Walk `value` in document order (without recursion) for `_json_problem`."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, loc)]
    seen: set[int] = set()
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return _unpaired_surrogate(where, item[exc.start])
            continue
        if isinstance(item, float | Decimal):
            if not (item.is_finite() if isinstance(item, Decimal) else math.isfinite(item)):
                return _not_finite(where, item)
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        members = _members(item)
        if members is not None:
            item = members
        if isinstance(item, Mapping):
            for key, child in reversed(list(item.items())):
                stack += [(child, (*where, key)), (key, where)]  # the key is read first
        elif isinstance(item, list | tuple):
            stack += [(child, (*where, i)) for i, child in reversed(list(enumerate(item)))]
    return None


def _unpaired_surrogate(loc: tuple[Any, ...], char: str) -> dict[str, Any]:
    message = (
        f"the text holds {char!r}, half of a UTF-16 surrogate pair, which is not a "
        "character and cannot be written as UTF-8: write the character itself"
    )
    return {"type": "unpaired_surrogate", "loc": loc, "msg": message, "input": None}


def _not_finite(loc: tuple[Any, ...], number: float | Decimal) -> dict[str, Any]:
    message = f"the number reads as {number}, which is not finite: write a finite number"
    return {"type": "finite_number", "loc": loc, "msg": message, "input": None}


def feedback(step: Step, errors: list[dict[str, Any]]) -> str:
    """A short text for the model: what failed, and the step's question and instruction."""
    problems = "\n".join(f"- {_location(e['loc'])}: {e['msg']}" for e in errors)
    lines = [f'The value of "{step.name}" was rejected:', problems, f"Question: {step.question}"]
    if step.instruction:
        lines.append(f"Instruction: {step.instruction}")
    lines.append(f'Answer "{step.name}" again, fixing exactly this.')
    return "\n".join(lines)


def _step_error(
    step: Step,
    errors: list[dict[str, Any]],
    check: str | None = None,
    value: Any = NO_VALUE,
    written: str | None = None,
) -> StepError:
    summary = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors)
    origin = f"check {check!r} on " if check else ""
    return StepError(
        f"{origin}step {step.name!r} failed: {summary}",
        step=step.name,
        errors=errors,
        feedback=feedback(step, errors),
        check=check,
        value=value,
        written=written,
    )


class StepChecker(Generic[SchemaT]):
    """Checks the steps of one output as they complete, in order.

    Feed each completed step to `accept` (it returns the validated value or raises
    `StepError`), then call `finish` for the validated model. A checker may start from
    steps accepted earlier (a repair continues after them).
    """

    def __init__(
        self,
        schema: type[SchemaT],
        *,
        context: Mapping[str, Any] | None = None,
        accepted: Mapping[str, Any] | None = None,
    ) -> None:
        self.schema = schema
        self.context = context
        self._steps = {s.name: s for s in steps(schema)}
        self._validators = _step_validators(schema)
        self._checks = cross_checks(schema)
        self._order = {name: i for i, name in enumerate(self._steps)}
        self.accepted: dict[str, Any] = {}
        self.raw: dict[str, Any] = {}
        self.waived: set[str] = set()  # advisory checks whose failures are let through
        self.advisories: list[AdvisoryFailure] = []  # their failures, kept steps only
        for name, value in (accepted or {}).items():
            self.accept(name, value)

    def accept(self, name: str, value: Any, *, written: str | None = None) -> Any:
        """Validate one completed step and run the cross-step checks it makes ready.

        `written` is the value's JSON text as the model wrote it, if known; a `StepError`
        that refuses this value carries it.
        """
        step = self._steps.get(name)
        if step is None:
            raise SchemaError(f"{self.schema.__name__} has no step {name!r}")
        problem = _json_problem(value, (name,))
        data = {**self.accepted, name: value}
        try:
            if problem is None:
                validator = self._validators.get(name, self.accepted)
                fields = validator.validate_python(data, context=self.context)[0]
                problem = _json_problem(fields[name], (name,))
        except ValidationError as exc:
            raise _step_error(step, _error_dicts(exc), value=value, written=written) from None
        if problem is not None:  # JSON text cannot hold it, as written or as validated
            raise _step_error(step, [problem], value=value, written=written)
        self.accepted[name] = fields[name]
        self.raw[name] = value
        try:
            for check in self._checks:
                if name in check.steps and all(s in self.accepted for s in check.steps):
                    self._run_check(check, name, written)
        except StepError:
            # a step that failed a check is not accepted, so a repair can redo it
            del self.accepted[name], self.raw[name]
            raise
        return fields[name]

    def _run_check(self, check: CrossCheck, name: str, written: str | None) -> None:
        """Run `check`, which step `name` (written as `written`) made ready."""
        try:
            check.run(self.accepted, self.context)
        except (ValueError, AssertionError) as exc:
            target = check.repair or max(check.steps, key=self._order.__getitem__)
            message = str(exc) or f"check {check.name} failed"
            if check.advisory and check.name in self.waived:
                value = self.raw.get(target)
                failure = AdvisoryFailure(check.name, target, message, check.steps, value)
                self.advisories.append(failure)
                return
            error = {"type": "check_failed", "loc": (target,), "msg": message, "input": None}
            value = self.raw.get(target, NO_VALUE)
            text = written if target == name else None  # the text known is `name`'s alone
            raise _step_error(self._steps[target], [error], check.name, value, text) from None

    def rollback(self, name: str) -> None:
        """Forget step `name` and every later step (a repair redoes them), and the advisory
        failures of checks that read any of them (they run again)."""
        start = self._order[name]
        for later in [n for n in self.accepted if self._order[n] >= start]:
            del self.accepted[later], self.raw[later]
        self.advisories = [
            a for a in self.advisories if all(self._order[s] < start for s in a.steps)
        ]

    def is_advisory(self, check: str | None) -> bool:
        """Whether `check` names an advisory cross-step check of the schema."""
        return any(c.name == check and c.advisory for c in self._checks)

    def waive_advisory(self) -> None:
        """Let every advisory check's failures through from now on (no repair left)."""
        self.waived.update(c.name for c in self._checks if c.advisory)

    def missing(self) -> list[str]:
        """Required steps not accepted yet, in order."""
        return [n for n, s in self._steps.items() if s.required and n not in self.accepted]

    def finish(self) -> SchemaT:
        """The validated model, once every required step is accepted.

        Model-level validators need the whole object, so they run here, over the raw
        values (running the field validators once more keeps their results identical).
        """
        for name in self.missing():
            error = {"type": "missing", "loc": (name,), "msg": "Field required", "input": None}
            raise _step_error(self._steps[name], [error])
        if not self.schema.__pydantic_decorators__.model_validators:
            built = self.schema.model_construct(set(self.accepted), **self.accepted)
            return cast(SchemaT, built)  # the plugin types model_construct by the base class
        try:
            return self.schema.model_validate(self.raw, context=self.context)
        except ValidationError as exc:
            errors = _error_dicts(exc)
            last = next(reversed(self._steps))
            located = [e for e in errors if e["loc"] and e["loc"][0] in self._steps]
            step = self._steps[located[0]["loc"][0]] if located else self._steps[last]
            # no value: a model validator reads the whole object, so the named step's
            # value is not refused on its own (it may pass once later steps change)
            raise _step_error(step, errors) from None


def budget_error(step: Step, limit: int) -> StepError:
    """The error for a step whose value ran past its `max_chunks` budget."""
    message = f"the value ran past its budget of about {limit} tokens: answer more briefly"
    error = {"type": "token_budget", "loc": (step.name,), "msg": message, "input": None}
    return _step_error(step, [error])


def validate_output(
    schema: type[SchemaT], output: Mapping[str, Any], *, context: Mapping[str, Any] | None = None
) -> SchemaT:
    """Validate a whole recorded output step by step; the first failure raises `StepError`.

    Raises:
        StepError: A step failed its checks.
        InvalidArgumentError: `output` is not a mapping of step values (an
            `arq.Unconverged` is refused: a run that did not converge has no output).
    """
    if isinstance(output, Unconverged):
        raise InvalidArgumentError(
            f"this {schema.__name__} run did not converge ({output.reason}): it has no"
            " validated output to check"
        )
    if not isinstance(output, Mapping):
        raise InvalidArgumentError(
            f"validate_output takes a mapping of step values, not {type(output).__name__}"
        )
    checker = StepChecker(schema, context=context)
    for name, value in output.items():
        if name not in checker._steps:
            error = {"type": "extra_forbidden", "loc": (name,), "msg": "Unknown step"}
            last = next(reversed(checker._steps.values()))
            raise _step_error(last, [{**error, "input": value}])
        checker.accept(name, value)
    return checker.finish()
