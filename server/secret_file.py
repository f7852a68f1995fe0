"""A secret kept in a file that operators rotate (a dCache macaroon, an OIDC access token).

The file is stat'ed at most every few seconds; when its mtime, size or inode
changed it is read again, so a rotated token takes effect with no restart.  A
file that is briefly missing or empty (being rewritten) keeps the old value.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("ngserve.remote")

CHECK_SECONDS = 2.0


class RotatingSecret:
    """The current contents of ``path``; ``value`` is what the config loader read at start."""

    def __init__(self, path: str, value: str, label: str) -> None:
        self.path, self.label = path, label
        self._value = value
        self._checked = time.monotonic()
        self._version = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def get(self) -> str:
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return self._value
        self._checked = now
        version = self._stat()
        if version is None or version == self._version:
            return self._value
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot re-read %s (%s); keeping the previous token", self.label, self.path,
                        getattr(exc, "strerror", None) or type(exc).__name__)
            return self._value
        if text:  # an empty file is one being rewritten: look again next time
            self._version = version
            if text != self._value:
                self._value = text
                log.info("%s: %s changed; using the new token", self.label, self.path)
        return self._value
