"""A git revision of this repository checked out beside it, for measurements against a baseline in the same run
(`make goldens`, `make profile BASELINE=...`)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def checked_out(revision: str) -> Iterator[Path]:
    """A detached worktree of `revision` in a temporary folder, removed afterwards."""
    tree = Path(tempfile.mkdtemp(prefix="ckd-baseline-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), revision], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def short(revision: str) -> str:
    """The abbreviated commit id of `revision`."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", revision], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
