"""Code version recorded in every artifact, and the code a stage depends on.

`stage_code(module)` walks a stage's imports (statically, function-level imports and the
source registry's module names included) and returns every project file it can run: the
one list behind a stage's DVC code deps (tests/test_dvc.py checks dvc.yaml against it)
and behind the code hashes that decide whether a store or a training run is resumed.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "dila_core")
_DOTTED = re.compile(r"(?:pipeline|stages|dila_core)(?:\.[a-z_][a-z0-9_]*)+")


def _module_file(name: str) -> Path | None:
    """The project file of module `name` (a package: its __init__.py), or None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path) -> set[str]:
    """Module names `path` imports anywhere (including lazily), plus project module names it holds
    as string constants (registries that import by name)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parent, base] if p)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)     # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
            names.add(node.value)
    return names


@functools.cache
def stage_code(module: str) -> tuple[str, ...]:
    """Every project file (relative to the repository root) that module `module` imports, directly
    or through other project modules, itself included; parent packages' __init__ files too."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):                           # importing a.b.c runs a/__init__, a/b/__init__
            path = _module_file(".".join(parts[:k]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(_imported(path))
    return tuple(sorted(str(p.relative_to(ROOT)) for p in seen))


def source_hash(paths: tuple[str, ...]) -> str:
    """sha256 over the named files, in the given (sorted) order, with their paths."""
    digest = hashlib.sha256()
    for rel in paths:
        digest.update(rel.encode())
        digest.update((ROOT / rel).read_bytes())
    return digest.hexdigest()


def code_hash(modules: str | tuple[str, ...]) -> str:
    """sha256 of every file the module(s) run (`stage_code`): a store or resume state made by other
    code is not reused."""
    names = (modules,) if isinstance(modules, str) else modules
    return source_hash(tuple(sorted({f for m in names for f in stage_code(m)})))


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict[str, str | bool | None]:
    """Package version and git commit (and whether the tree was dirty). The code a store or a model
    came from is in its own record (the store's plan, a run's `code_sha256`)."""
    try:
        version = metadata.version("dila")
    except metadata.PackageNotFoundError:
        version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "package": version,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }
