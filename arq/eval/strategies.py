"""`unchecked(schema)`: the same steps and prompt with every check removed (a baseline).

Naive ARQ use: the schema's steps, types, constraints, questions and instructions, so the
same prompt and JSON Schema, but no field or model validators (in nested models too) and no
cross-step checks. Evaluations compare it with the checked schema to show what checks buy.
"""

from __future__ import annotations

import copy
import types
import weakref
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel, create_model
from pydantic.functional_validators import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    WrapValidator,
)

from arq.schema import Reasoning

__all__ = ["unchecked"]

_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)
_STRIPPED: weakref.WeakKeyDictionary[type[BaseModel], type[BaseModel]] = weakref.WeakKeyDictionary()


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
