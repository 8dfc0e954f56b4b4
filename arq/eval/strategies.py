"""The strategies an evaluation runs, each derived from the one schema.

- `arq`: the schema with its checks, repaired from the failing step (`max_repairs`);
- `arq-unchecked`: the same steps and prompt, with every check removed and no repair;
- `cot`: one free-text reasoning step, then the answer steps (`arq.cot`), unchecked;
- `direct`: the answer steps alone (`arq.direct`), unchecked.

`strategy_named(name)` tells how a strategy runs a schema: what it sends, whether checks
and repairs apply, and which schema's checks its output is held to. `unchecked(schema)` is
naive ARQ use: the schema's steps, types, constraints, questions and instructions, so the
same prompt and JSON Schema, but no field or model validators (in nested models too) and
no cross-step checks.
"""

from __future__ import annotations

import copy
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel, create_model
from pydantic.functional_validators import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    WrapValidator,
)

from arq.errors import InvalidArgumentError
from arq.schema import Reasoning, cot, direct

__all__ = [
    "DEFAULT_STRATEGIES",
    "STRATEGIES",
    "Plan",
    "Strategy",
    "strategy_named",
    "unchecked",
]

_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)
_STRIPPED: weakref.WeakKeyDictionary[type[BaseModel], type[BaseModel]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Plan:
    """How one strategy runs one schema.

    Attributes:
        schema: The schema evaluated.
        run: The schema sent to the model.
        reference: The schema whose checks the output is held to.
    """

    schema: type[Reasoning]
    run: type[Reasoning]
    reference: type[Reasoning]


@dataclass(frozen=True)
class Strategy:
    """One way to run a schema.

    Attributes:
        name: The strategy's name, as `evaluate` takes it.
        derive: The schema the strategy asks for, with its checks, from the one evaluated.
        checked: Whether the run applies the checks and repairs. Otherwise it is a single
            pass without checks, and whether its output passes them is measured afterwards.
    """

    name: str
    derive: Callable[[type[Reasoning]], type[Reasoning]]
    checked: bool

    def plan(self, schema: type[Reasoning]) -> Plan:
        """What this strategy sends for `schema` and what its output is checked against."""
        reference = self.derive(schema)
        return Plan(schema, reference if self.checked else unchecked(reference), reference)


def _itself(schema: type[Reasoning]) -> type[Reasoning]:
    return schema


_TABLE = {
    s.name: s
    for s in (
        Strategy("arq", _itself, checked=True),
        Strategy("arq-unchecked", _itself, checked=False),
        Strategy("cot", cot, checked=False),
        Strategy("direct", direct, checked=False),
    )
}
STRATEGIES = tuple(_TABLE)
"""The names of the strategies `evaluate` knows."""
DEFAULT_STRATEGIES = ("arq", "cot", "direct")
"""The strategies `evaluate` runs unless told otherwise."""


def strategy_named(name: str) -> Strategy:
    """The strategy called `name`.

    Raises:
        InvalidArgumentError: `name` is not one of `STRATEGIES`.
    """
    if name not in _TABLE:
        raise InvalidArgumentError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
    return _TABLE[name]


def unchecked(schema: type[Reasoning]) -> type[Reasoning]:
    """`schema` with the same steps, types, constraints, questions and instructions (so the
    same prompt and JSON Schema) but no checks: no field or model validators, in nested
    models too, and no cross-step checks."""
    return cast(type[Reasoning], _stripped_model(schema))


def _stripped_model(model: type[BaseModel]) -> type[BaseModel]:
    known = _STRIPPED.get(model)
    if known is not None:
        return known
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kept = copy.copy(info)
        kept.metadata = [m for m in info.metadata if not isinstance(m, _VALIDATORS)]
        fields[name] = (_stripped(info.annotation), kept)
    options: dict[str, Any] = {"__doc__": model.__doc__, "__module__": model.__module__}
    if issubclass(model, Reasoning):
        options["__base__"] = Reasoning
    else:
        options["__config__"] = model.model_config
    derived: type[BaseModel] = create_model(model.__name__, **options, **fields)
    if issubclass(model, Reasoning):
        items = dict(model.__arq_items__)  # checklist items shape the prompt
        type.__setattr__(derived, "__arq_items__", items)
    _STRIPPED[model] = derived
    return derived


def _stripped(annotation: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _stripped_model(annotation)
    if origin is Annotated:
        kept = tuple(m for m in annotation.__metadata__ if not isinstance(m, _VALIDATORS))
        params = (_stripped(args[0]), *kept)
        return cast(Any, Annotated)[params] if kept else params[0]
    if origin is Literal or not args:
        return annotation
    stripped = tuple(_stripped(a) for a in args)
    if origin is Union or origin is types.UnionType:
        return Union[stripped]  # noqa: UP007
    return origin[stripped]
