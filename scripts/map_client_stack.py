"""Map a stack trace from the bundled Neuroglancer client to its TypeScript source.

The ``neuroglancer`` wheel ships source maps (with ``sourcesContent``) beside its minified
bundles.  Paste a stack (from a ``pageerror``, the console, or Playwright) on stdin:

    python scripts/map_client_stack.py < stack.txt

Each ``file.js:line:col`` frame is printed with the original file, line, column and code.
"""

from __future__ import annotations

import bisect
import json
import re
import sys
from functools import lru_cache
from importlib.resources import files

CLIENT = files("neuroglancer.static").joinpath("client")
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _vlq(segment: str) -> list[int]:
    """The numbers of one base64 VLQ segment of a source map's ``mappings``."""
    out, shift, value = [], 0, 0
    for ch in segment:
        digit = _B64[ch]
        value += (digit & 31) << shift
        if digit & 32:
            shift += 5
        else:
            out.append(-(value >> 1) if value & 1 else value >> 1)
            shift = value = 0
    return out


@lru_cache(maxsize=None)
def _load(bundle: str) -> tuple[dict, list[list[tuple[int, int, int, int]]]]:
    """A bundle's source map and, per generated line, its (column, source, line, column) segments."""
    smap = json.loads(CLIENT.joinpath(bundle + ".map").read_text())
    lines, src, line, col = [], 0, 0, 0
    for text in smap["mappings"].split(";"):
        gen_col, segments = 0, []
        for seg in filter(None, text.split(",")):
            v = _vlq(seg)
            gen_col += v[0]
            if len(v) >= 4:  # the relative fields carry over from segment to segment
                src, line, col = src + v[1], line + v[2], col + v[3]
                segments.append((gen_col, src, line, col))
        lines.append(segments)
    return smap, lines


def original(bundle: str, line: int, column: int) -> tuple[str, int, int, str]:
    """(source file, line, column, code) for a 1-based ``line`` and ``column`` of ``bundle``."""
    smap, lines = _load(bundle)
    segments = lines[line - 1]
    i = max(bisect.bisect_right([s[0] for s in segments], column - 1) - 1, 0)
    _, src, src_line, src_col = segments[i]
    code = (smap["sourcesContent"][src] or "").splitlines()
    name = smap["sources"][src].replace("webpack://neuroglancer/./", "")
    return name, src_line + 1, src_col + 1, code[src_line].strip() if src_line < len(code) else ""


def main() -> int:
    for bundle, line, column in re.findall(r"([\w.]+\.js):(\d+):(\d+)", sys.stdin.read()):
        name, src_line, src_col, code = original(bundle, int(line), int(column))
        print(f"{bundle}:{line}:{column} -> {name}:{src_line}:{src_col}  {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
