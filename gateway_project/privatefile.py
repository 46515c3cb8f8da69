"""Files only their owner may read, from the moment they exist (generated key, demo logins)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def private_file_write(path: Path, text: str, *, replace: bool) -> bool:
    """Write `text` to `path` as mode 0600, atomically; False when it exists and `replace` is off.

    The text goes to a fresh 0600 file first, then is linked (or renamed) into place: no reader
    ever sees `path` world-readable, empty or half written, and of two processes racing to create
    it one wins and both read the winner's text.
    """
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(scratch, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(scratch, path)
            return True
        try:
            os.link(scratch, path)
        except FileExistsError:
            return False
        return True
    finally:
        scratch.unlink(missing_ok=True)
