"""Code version recorded in every artifact, and the code hash that decides resumes."""
from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The source files whose behaviour determines the feature store's contents.
# dvc.yaml lists the same paths as the extract stage's code deps (a test checks it).
EXTRACT_CODE = ("pipeline/encoder.py", "pipeline/store.py", "pipeline/sources", "stages/extract.py")


def source_hash(paths: tuple[str, ...] = EXTRACT_CODE) -> str:
    """sha256 over the named files (directories: their *.py files), in sorted order."""
    digest = hashlib.sha256()
    for rel in paths:
        path = ROOT / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(str(f.relative_to(ROOT)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict[str, str | bool | None]:
    """Package version, git commit (and whether the tree was dirty), and the extract-code hash."""
    try:
        version = metadata.version("dila")
    except metadata.PackageNotFoundError:
        version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "package": version,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "extract_code_sha256": source_hash(),
    }
