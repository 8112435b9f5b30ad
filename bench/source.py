"""Which code of ours is measured: the working tree (default) or a git ref exported to a temp dir.

`python -m prefork_proxy` puts its working directory first on sys.path, so a tree exported with
`git archive` and used as the working directory shadows the venv's editable install. The header of
the report names the commit, and says when the working tree had uncommitted changes.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("prefork_proxy", "workers", "cache")


class SourceError(Exception):
    """The ref cannot be exported."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=60)
    if done.returncode != 0:
        raise SourceError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")


def describe_worktree() -> str:
    try:
        sha = _git("rev-parse", "--short", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--", *PACKAGES).strip()
    except (SourceError, OSError, subprocess.TimeoutExpired):
        return f"working tree {REPO} (not a git checkout?)"
    return f"working tree at {sha}" + (" + uncommitted changes" if dirty else "")


def export(ref: str, dest: Path) -> str:
    """Extract the tree of `ref` into dest; return its description for the report."""
    sha = _git("rev-parse", "--short", f"{ref}^{{commit}}").strip()
    done = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha], capture_output=True,
                          timeout=60)
    if done.returncode != 0:
        raise SourceError(f"git archive {sha}: {done.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4
        tar.extractall(dest, **safe)
    return f"{ref} = {sha} (exported)"
