"""Reasoning schemas: a Pydantic model whose fields, in order, are the steps to think through.

```python
class Reply(arq.Reasoning):
    '''Answer the customer while following the support guidelines.'''

    request: str = arq.query("What exactly is the customer asking for?")
    applicable: list[str] = arq.query("Which guideline ids apply?")
    answer: str = arq.answer("The reply to send.")
```

Each step has a question (the field's description) and may re-state the instruction that
matters at that point. Answer steps hold the result; the others are the reasoning that
leads to it. `steps(Schema)` gives the ordered `Step` view that the rest of arq works from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from arq.checks import CrossCheck, check, coverage_problem, declared_checks
from arq.errors import SchemaError

__all__ = [
    "Reasoning",
    "Step",
    "answer",
    "checklist",
    "cot",
    "cross_checks",
    "direct",
    "query",
    "steps",
]

StepKind = Literal["query", "answer"]
T = TypeVar("T")


@dataclass(frozen=True)
class StepSpec:
    """arq's own part of a field: kept in the field's metadata, never given to Pydantic."""

    kind: StepKind
    instruction: str | None = None
    max_chunks: int | None = None


@dataclass(frozen=True)
class Step:
    """One step of a reasoning schema, in declared order."""

    name: str
    question: str
    instruction: str | None
    annotation: Any
    is_answer: bool
    max_chunks: int | None
    required: bool
    field: FieldInfo


def _step_field(
    kind: StepKind,
    text: str,
    *,
    instruction: str | None,
    max_chunks: int | None,
    default: Any,
    constraints: Mapping[str, Any],
) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise SchemaError(f"arq.{kind}() needs a non-empty question text")
    if max_chunks is not None and max_chunks < 1:
        raise SchemaError(f"arq.{kind}(max_chunks={max_chunks}) must be a positive integer")
    given = {k: v for k, v in constraints.items() if v is not None}
    info: FieldInfo = Field(default, description=text.strip(), **given)
    info.metadata.append(StepSpec(kind, instruction, max_chunks))
    return info


def query(
    question: str,
    *,
    instruction: str | None = None,
    max_chunks: int | None = None,
    default: Any = PydanticUndefined,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    multiple_of: float | None = None,
    examples: list[Any] | None = None,
) -> Any:
    """A reasoning step: `question` is what the model must answer at this point.

    Args:
        question: the targeted question for this step (becomes the field's description).
        instruction: the instruction that matters here, re-stated beside the question.
        max_chunks: arq's budget for this step's value, in stream chunks (about one token
            each on llama.cpp and OpenAI-style servers; the prompt states it as "about N
            tokens"). A value that runs past it fails at once. Not a Pydantic constraint.
        default: a default value; `None` makes the step optional (nullable when strict).
        min_length: the least length (this and the eight below are Pydantic's field
            constraints).
        max_length: the greatest length.
        pattern: a regular expression a string value must match.
        gt: a bound the value must be greater than.
        ge: a bound the value must be greater than or equal to.
        lt: a bound the value must be less than.
        le: a bound the value must be less than or equal to.
        multiple_of: a number the value must be a multiple of.
        examples: example values of the step.
    """
    return _step_field(
        "query",
        question,
        instruction=instruction,
        max_chunks=max_chunks,
        default=default,
        constraints={
            "min_length": min_length,
            "max_length": max_length,
            "pattern": pattern,
            "gt": gt,
            "ge": ge,
            "lt": lt,
            "le": le,
            "multiple_of": multiple_of,
            "examples": examples,
        },
    )


def answer(
    question: str,
    *,
    instruction: str | None = None,
    max_chunks: int | None = None,
    default: Any = PydanticUndefined,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    multiple_of: float | None = None,
    examples: list[Any] | None = None,
) -> Any:
    """An answer step: the result the reasoning leads to. Same parameters as `query`;
    `question` asks for the result ("The reply to send.")."""
    return _step_field(
        "answer",
        question,
        instruction=instruction,
        max_chunks=max_chunks,
        default=default,
        constraints={
            "min_length": min_length,
            "max_length": max_length,
            "pattern": pattern,
            "gt": gt,
            "ge": ge,
            "lt": lt,
            "le": le,
            "multiple_of": multiple_of,
            "examples": examples,
        },
    )


def _spec(info: FieldInfo) -> StepSpec | None:
    for item in info.metadata:
        if isinstance(item, StepSpec):
            return item
    return None


class Reasoning(BaseModel):
    """Base class of reasoning schemas: fields are steps, in order.

    Every field needs a question (`arq.query(...)`, `arq.answer(...)`, or a plain
    `Field(description=...)`), and a schema with fields needs at least one answer step.
    Mistakes are reported with `SchemaError` when the class is defined.
    """

    model_config = ConfigDict(extra="forbid")

    __arq_checks__: ClassVar[tuple[CrossCheck, ...]] = ()
    # items of fields narrowed by `checklist`, so prompts can list one entry per item
    __arq_items__: ClassVar[dict[str, list[Any]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        inherited = [c for base in cls.__mro__[1:] for c in vars(base).get("__arq_checks__", ())]
        own = declared_checks(vars(cls))
        cls.__arq_checks__ = tuple({c.name: c for c in [*inherited, *own]}.values())
        _validate_definition(cls)


def _validate_definition(schema: type[Reasoning]) -> None:
    name = schema.__name__
    fields = schema.model_fields
    for field_name, info in fields.items():
        if info.alias is not None and info.alias != field_name:
            raise SchemaError(
                f"{name}.{field_name}: aliases are not supported; the field name is the "
                f"JSON key the model writes, so name the field {info.alias!r} instead",
                schema=name,
                field=field_name,
            )
        if not (info.description or "").strip():
            raise SchemaError(
                f"{name}.{field_name} has no question: declare it with "
                f'arq.query("...") or arq.answer("...")',
                schema=name,
                field=field_name,
            )
    if fields and not any(_is_answer(info) for info in fields.values()):
        raise SchemaError(
            f"{name} has no answer step: mark the field that holds the result with "
            f'arq.answer("...")',
            schema=name,
        )
    for spec in schema.__arq_checks__:
        unknown = [s for s in spec.steps if s not in fields]
        if not spec.steps or unknown:
            raise SchemaError(
                f"{name}: check {spec.name!r} reads unknown steps {unknown or '(none)'}; "
                f"steps are: {', '.join(fields)}",
                schema=name,
                field=spec.name,
            )
        if spec.repair is not None and spec.repair not in fields:
            raise SchemaError(
                f"{name}: check {spec.name!r} repairs unknown step {spec.repair!r}",
                schema=name,
                field=spec.name,
            )


def _is_answer(info: FieldInfo) -> bool:
    spec = _spec(info)
    return spec is not None and spec.kind == "answer"


def _require_schema(schema: object) -> type[Reasoning]:
    if not (isinstance(schema, type) and issubclass(schema, Reasoning)):
        raise SchemaError(f"expected a subclass of arq.Reasoning, got {schema!r}")
    if not schema.model_fields:
        raise SchemaError(f"{schema.__name__} has no steps: declare fields with arq.query()")
    return schema


def _cached(schema: type[Reasoning], key: str, compute: Callable[[], T]) -> T:
    """Memoize per class in the class itself, so dynamic schemas are freed with their class."""
    store: dict[str, Any] = schema.__dict__.get("__arq_cache__") or {}
    if "__arq_cache__" not in schema.__dict__:
        type.__setattr__(schema, "__arq_cache__", store)
    if key not in store:
        store[key] = compute()
    return cast(T, store[key])


def steps(schema: type[Reasoning]) -> tuple[Step, ...]:
    """The ordered steps of a reasoning schema."""
    schema = _require_schema(schema)
    return _cached(schema, "steps", lambda: _compute_steps(schema))


def _compute_steps(schema: type[Reasoning]) -> tuple[Step, ...]:
    result = []
    for name, info in schema.model_fields.items():
        spec = _spec(info) or StepSpec("query")
        result.append(
            Step(
                name=name,
                question=info.description or "",
                instruction=spec.instruction,
                annotation=info.annotation,
                is_answer=spec.kind == "answer",
                max_chunks=spec.max_chunks,
                required=info.is_required(),
                field=info,
            )
        )
    return tuple(result)


def cross_checks(schema: type[Reasoning]) -> tuple[CrossCheck, ...]:
    """The cross-step checks declared on a schema (and its bases)."""
    return _require_schema(schema).__arq_checks__


# --- derived strategies -------------------------------------------------------------------

COT_QUESTION = "Think step by step about the task before answering."


def direct(schema: type[Reasoning]) -> type[Reasoning]:
    """The direct-answer baseline of a schema: its answer steps only."""
    return _cached(_require_schema(schema), "direct", lambda: _direct(schema))


def cot(schema: type[Reasoning]) -> type[Reasoning]:
    """The chain-of-thought baseline: one free-text reasoning step, then the answers."""
    return _cached(_require_schema(schema), "cot", lambda: _cot(schema))


def _direct(schema: type[Reasoning]) -> type[Reasoning]:
    fields = {s.name: (s.annotation, s.field) for s in steps(schema) if s.is_answer}
    return _derived(schema, "Direct", fields)


def _cot(schema: type[Reasoning]) -> type[Reasoning]:
    thinking: dict[str, Any] = {"reasoning": (str, query(COT_QUESTION))}
    answers = {s.name: (s.annotation, s.field) for s in steps(schema) if s.is_answer}
    if "reasoning" in answers:
        raise SchemaError(f"{schema.__name__}: an answer step named 'reasoning' clashes with cot()")
    return _derived(schema, "CoT", {**thinking, **answers})


def _derived(schema: type[Reasoning], suffix: str, fields: dict[str, Any]) -> type[Reasoning]:
    model = create_model(
        f"{schema.__name__}{suffix}",
        __base__=Reasoning,
        __doc__=schema.__doc__,
        __module__=schema.__module__,
        **fields,
    )
    return cast(type[Reasoning], model)


# --- per-item checklists -------------------------------------------------------------------


def checklist(
    schema: type[Reasoning],
    field: str,
    items: Sequence[Any],
    *,
    id_field: str = "id",
) -> type[Reasoning]:
    """Narrow a list step to one entry per item: ids constrained and each used exactly once.

    `schema.<field>` must be declared as `list[Item]` where `Item` is a model with an
    `id_field` field. `items` are ids, `(id, text)` pairs, mappings with an `"id"` key or
    objects with an `id` attribute. The returned schema constrains `Item.<id_field>` to the
    given ids (an enum in the JSON Schema) and checks that every id appears exactly once.
    """
    schema = _require_schema(schema)
    ids = [_item_id(item) for item in items]
    if not ids:
        raise SchemaError(f"checklist({schema.__name__}.{field}): no items given")
    if len(set(ids)) != len(ids):
        raise SchemaError(f"checklist({schema.__name__}.{field}): item ids must be unique")
    info = schema.model_fields.get(field)
    if info is None:
        raise SchemaError(f"checklist: {schema.__name__} has no step {field!r}", field=field)
    item_model = _list_item_model(schema, field, info.annotation)
    if id_field not in item_model.model_fields:
        raise SchemaError(
            f"checklist: {item_model.__name__} has no {id_field!r} field to constrain",
            schema=schema.__name__,
            field=field,
        )
    id_info = item_model.model_fields[id_field]
    id_type = cast(Any, Literal.__getitem__(tuple(ids)))
    id_definition: dict[str, Any] = {id_field: (id_type, _copy_field(id_info))}
    narrowed = create_model(
        item_model.__name__, __base__=item_model, __module__=item_model.__module__, **id_definition
    )

    def every_item_checked_once(**values: Any) -> None:
        got = [str(getattr(entry, id_field)) for entry in values[field]]
        problem = coverage_problem(ids, got)
        if problem:
            raise ValueError(problem)

    every_item_checked_once.__name__ = f"{field}_cover_every_item_once"
    coverage = declared_checks({"coverage": check(field)(every_item_checked_once)})
    # exactly one entry per item: the JSON Schema (and so a grammar) knows the length too
    sized = Annotated[list[narrowed], Field(min_length=len(ids), max_length=len(ids))]
    list_definition: dict[str, Any] = {field: (sized, _copy_field(info))}
    derived = create_model(
        schema.__name__,
        __base__=schema,
        __module__=schema.__module__,
        __doc__=schema.__doc__,
        **list_definition,
    )
    # create_model takes no class-body functions, so the check is registered afterwards.
    derived.__arq_checks__ = (*derived.__arq_checks__, *coverage)
    derived.__arq_items__ = {**schema.__arq_items__, field: list(items)}
    return cast(type[Reasoning], derived)


def _item_id(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, tuple) and item:
        return str(item[0])
    if isinstance(item, Mapping):
        return str(item["id"])
    return str(item.id)


def _list_item_model(schema: type[Reasoning], field: str, annotation: Any) -> type[BaseModel]:
    args = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is list and args:
        item = args[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    raise SchemaError(
        f"checklist: {schema.__name__}.{field} must be declared as list[SomeModel], "
        f"not {annotation!r}",
        schema=schema.__name__,
        field=field,
    )


def _copy_field(info: FieldInfo) -> FieldInfo:
    return FieldInfo.merge_field_infos(info)
