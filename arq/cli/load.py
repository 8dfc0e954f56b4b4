"""What the `arq` command reads: the SCHEMA argument, `module:attr` arguments, JSON files.

SCHEMA is one of:

- `package.module:Class`, imported (the current folder is on the import path meanwhile);
- `path/to/file.py:Class`, the file loaded as a module (its folder on the import path);
- a stock blueprint name, a key of `arq.blueprints.BLUEPRINTS`.

Every mistake is a `UsageError` whose message is one line saying what is wrong and what to
do instead; the command prints it and exits with status 2.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import json
import os
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from arq.cli.output import one_line
from arq.errors import UsageError
from arq.schema import Reasoning

__all__ = [
    "blueprints",
    "json_kind",
    "load_attribute",
    "load_context",
    "load_schema",
    "read_text",
]

FORMS = "module:Class, path/to/file.py:Class or a stock blueprint name"


def load_schema(spec: str) -> type[Reasoning]:
    """The reasoning schema that `spec` names (see the module's docstring)."""
    target, colon, attr = spec.rpartition(":")
    if not colon or "/" in attr or "\\" in attr or attr.endswith(".py"):
        return _named(spec)
    if not target or not attr:
        raise UsageError(f"SCHEMA {spec!r}: give {FORMS}")
    module = _module(target)
    try:
        found: Any = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise UsageError(
            f"{target} has no attribute {attr!r}; {_classes_hint(module, target)}"
        ) from None
    if not (isinstance(found, type) and issubclass(found, Reasoning)):
        raise UsageError(
            f"{spec} is {_describe(found)}, not an arq.Reasoning subclass; "
            f"{_classes_hint(module, target)}"
        )
    return found


def load_attribute(spec: str, what: str) -> Any:
    """The attribute `spec` (`package.module:attr` or `path/file.py:attr`) names; a file
    already loaded as a module is not run again. `what` names the argument in messages."""
    target, colon, attr = spec.rpartition(":")
    if not colon or not target or not attr:
        raise UsageError(f"{what} {spec!r}: give module:attr or path/to/file.py:attr")
    loaded = _loaded(target) if _is_path(target) else None
    module = loaded if loaded is not None else _module(target)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise UsageError(f"{what} {spec!r}: {target} has no attribute {attr!r}")
        value = getattr(value, part)
    return value


def blueprints() -> dict[str, type[Reasoning]]:
    """The stock blueprints, read now (the registry may change while a program runs)."""
    try:
        module = importlib.import_module("arq.blueprints")
    except Exception as exc:
        raise UsageError(f"could not load the stock blueprints: {_error_text(exc)}") from None
    return dict(getattr(module, "BLUEPRINTS", {}))


def _named(name: str) -> type[Reasoning]:
    """A stock blueprint, or a clear word on what the name looks like instead."""
    registry = blueprints()
    if name in registry:
        found = registry[name]
        if not (isinstance(found, type) and issubclass(found, Reasoning)):
            raise UsageError(f"stock blueprint {name!r} is {_describe(found)}, not a schema")
        return found
    if name.endswith(".py") or "/" in name or "\\" in name:
        hint = ""
        path = Path(name)
        if path.is_file():
            hint = "; " + _classes_hint(_load_file(path), name)
        raise UsageError(f"SCHEMA {name!r} names a file but no class: give {name}:ClassName{hint}")
    known = ", ".join(sorted(registry)) or "none are installed"
    close = difflib.get_close_matches(name, list(registry), n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown blueprint {name!r}: {guess}stock blueprints: {known}; "
        "or give module:Class or path/to/file.py:Class"
    )


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target or Path(target).is_file()


def _module(target: str) -> ModuleType:
    """A module by its dotted name, imported, or a .py file, loaded."""
    return _load_file(Path(target)) if _is_path(target) else _import(target)


def _loaded(file: str) -> ModuleType | None:
    """The module that `file` was loaded as, if it was."""
    path = str(Path(file).resolve())
    loaded = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == path]
    return loaded[0] if loaded else None


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    """`folder` first on the import path while a schema's module runs its top level."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _import(name: str) -> ModuleType:
    try:
        with _on_path(os.getcwd()):
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {exc.name!r}: check the spelling, install the package that "
                "holds it, or run arq from the folder that contains it"
            ) from None
        raise UsageError(f"could not import {name!r}: {_error_text(exc)}") from None
    except Exception as exc:
        raise UsageError(f"could not import {name!r}: {_error_text(exc)}") from None


def _load_file(path: Path) -> ModuleType:
    """Run a .py file as a module, registered in `sys.modules` first so that Pydantic
    resolves the annotations of its classes."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise UsageError(f"schema file {str(path)!r} {what}: check the path")
    resolved = path.resolve()
    name = _module_name(resolved)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {str(path)!r} as Python: name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _on_path(str(resolved.parent)):
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"could not load {str(path)!r}: {_error_text(exc)}") from None
    return module


def _module_name(path: Path) -> str:
    """The file's stem, unless another module already holds that name."""
    stem = re.sub(r"\W", "_", path.stem)
    if not stem.isidentifier():
        stem = f"_{stem}"
    existing = sys.modules.get(stem)
    if existing is None or getattr(existing, "__file__", None) == str(path):
        return stem
    return f"_arq_schema_file_{stem}_{abs(hash(str(path))):x}"


def _error_text(exc: BaseException) -> str:
    """`Type: message (where)` on one line, `where` being the innermost user frame."""
    if isinstance(exc, SyntaxError):
        where = f"{Path(exc.filename or '?').name}, line {exc.lineno}"
        return f"SyntaxError: {exc.msg} ({where})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    return one_line(f"{type(exc).__name__}: {exc}{where}")


def _classes_hint(module: ModuleType, target: str) -> str:
    """The Reasoning classes `module` defines, as SCHEMA arguments."""
    names = sorted(
        name
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, Reasoning)
        and value is not Reasoning
        and value.__module__ == module.__name__
    )
    if not names:
        return f"{target} defines no arq.Reasoning subclass"
    return f"Reasoning classes in {target}: {', '.join(names)} (e.g. {target}:{names[0]})"


def _describe(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, ModuleType):
        return f"the module {value.__name__}"
    if callable(value):
        return f"a {type(value).__name__} ({getattr(value, '__name__', '?')})"
    return f"a {type(value).__name__} value"


def json_kind(value: object) -> str:
    """How JSON calls the type of a decoded value: 'an array', 'a string', ..."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def read_text(path: str, what: str) -> str:
    """A file's text, or a `UsageError` naming `what` the file was for."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path!r} not found: check the path") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path!r} is a folder: name a file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path!r} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None


def load_context(path: str) -> dict[str, Any]:
    """A context file: one JSON object, whose keys the prompt and the checks read."""
    text = read_text(path, "context file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"context file {path!r} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"context file {path!r} must hold a JSON object, not {json_kind(data)}")
    return data
