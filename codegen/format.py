"""Format generated source with the pinned ruff, on stdin, with fixed settings.

The settings are passed explicitly (``--isolated``), so the output does not depend on
whichever ruff configuration happens to sit above the output directory.
"""

from __future__ import annotations

import subprocess
import sys

__all__ = ["LINE_LENGTH", "format_source"]

LINE_LENGTH = 110
TARGET_VERSION = "py311"


def _ruff() -> list[str]:
    try:
        from ruff.__main__ import find_ruff_bin  # type: ignore[import-untyped]

        return [find_ruff_bin()]
    except (ImportError, FileNotFoundError):
        return [sys.executable, "-m", "ruff"]


def format_source(source: str, filename: str) -> str:
    """Return ``source`` formatted by ``ruff format``.

    Raises:
        RuntimeError: ruff failed (the generator produced invalid Python: a bug).
    """
    command = [
        *_ruff(),
        "format",
        "--isolated",
        f"--line-length={LINE_LENGTH}",
        f"--target-version={TARGET_VERSION}",
        f"--stdin-filename={filename}",
        "-",
    ]
    proc = subprocess.run(command, input=source.encode("utf-8"), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ruff format failed on {filename}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode("utf-8")
