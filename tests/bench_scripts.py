"""The scripts of `bench/`, imported from their files for the tests that check them.

`bench/` is a folder of scripts run as `python bench/<name>.py`, not a package: a script
imports a sibling by its bare name (`from convergence_tasks import make_task`), which works
because Python puts the script's folder first on its path. Here each is imported from its
file under that same bare name (the standard library's recipe for importing a source file
directly), so a sibling loaded first is the one a later script's import finds, and the
test session's path is left alone.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["bench_script"]

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_script(name: str, *siblings: str) -> ModuleType:
    """Import `bench/<name>.py` as module `name`, after the `siblings` it imports."""
    for sibling in siblings:
        bench_script(sibling)
    path = BENCH / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) != str(path):
            raise ImportError(f"a module {name!r} from elsewhere is imported already", name=name)
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"bench/{name}.py cannot be imported", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
