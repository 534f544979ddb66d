"""Runs python doc blocks in one interpreter, one after another, in one namespace.

Reads one JSON request per line on stdin (``{"code": ..., "name": ...}``) and answers each with
one JSON line on its real stdout: ``{"ok": bool, "stdout": str, "error": str}``. A block's
prints are captured; its traceback is the error. Started by test_docs.py as a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def main() -> None:
    answers = sys.stdout
    namespace: dict[str, object] = {"__name__": "__main__"}
    for line in sys.stdin:
        request = json.loads(line)
        out = io.StringIO()
        error = ""
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(request["code"], request["name"], "exec"), namespace)
            except BaseException:
                error = traceback.format_exc()
        answers.write(json.dumps({"ok": not error, "stdout": out.getvalue(), "error": error}) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
