"""What native libraries write straight to the process's stderr (file descriptor 2), collected.

decord's C++ logging writes there directly, past Python's sys.stderr and any log level,
so the only way to keep its lines off the terminal is to point the descriptor elsewhere
while it runs.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def captured_stderr(lines: list[str]) -> Iterator[None]:
    """Collect into `lines` the non-blank lines written to file descriptor 2 while the block runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(ln.strip() for ln in sink.read().decode(errors="replace").splitlines() if ln.strip())
