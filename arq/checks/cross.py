"""Cross-step checks: declared on a schema with `@arq.check(...)`, run as soon as every step
they read is complete::

    @arq.check("applicable", "checks")
    def every_applicable_checked(applicable: list[str], checks: list[Check]) -> None:
        ...  # raise ValueError("...") to reject
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

__all__ = ["CrossCheck", "check", "declared_checks"]

P = ParamSpec("P")
R = TypeVar("R")

_CHECK_ATTR = "__arq_check__"


@dataclass(frozen=True)
class CrossCheck:
    """A check over several steps; `repair` is the step to redo when it fails; an
    `advisory` check's failure is let through once its own repairs are spent
    (`arq.checks.severity`)."""

    name: str
    steps: tuple[str, ...]
    repair: str | None
    function: Callable[..., object]
    wants_context: bool
    advisory: bool = False

    def run(self, values: Mapping[str, Any], context: Mapping[str, Any] | None) -> None:
        """Call the check with the step values it reads (and the context, if it asks)."""
        kwargs = {name: values[name] for name in self.steps}
        if self.wants_context:
            kwargs["context"] = context if context is not None else {}
        self.function(**kwargs)


def check(
    *steps: str, repair: str | None = None, advisory: bool = False
) -> Callable[[Callable[P, R]], staticmethod[P, R]]:
    """Declare a cross-step check inside a `Reasoning` class body.

    The function takes the named steps as keyword arguments (and `context`, if it declares
    a parameter of that name) and raises `ValueError` or `AssertionError` to reject. It
    runs as soon as every named step is complete. When it fails, the step named by
    `repair` is repaired, by default the latest step it reads.

    An `advisory` check guards attention rather than what the caller relies on: it is
    repaired within its own budget (`Executor(advisory_repairs=1)`), and if it still
    fails, the run goes on and the failure is recorded on the result
    (`Result.advisories`) and in the trace (`arq.checks.severity`).
    """

    def decorate(function: Callable[P, R]) -> staticmethod[P, R]:
        parameters = inspect.signature(function).parameters
        spec = CrossCheck(
            name=function.__name__,
            steps=tuple(steps),
            repair=repair,
            function=function,
            wants_context="context" in parameters,
            advisory=advisory,
        )
        setattr(function, _CHECK_ATTR, spec)
        return staticmethod(function)

    return decorate


def declared_checks(namespace: Mapping[str, Any]) -> list[CrossCheck]:
    """The cross-step checks found in one class namespace, in definition order."""
    found = []
    for value in namespace.values():
        function = value.__func__ if isinstance(value, staticmethod) else value
        spec = getattr(function, _CHECK_ATTR, None)
        if isinstance(spec, CrossCheck):
            found.append(spec)
    return found
