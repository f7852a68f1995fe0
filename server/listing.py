"""The HTML folder listing: Neuroglancer's autocompletion source and the landing page.

Neuroglancer's completer and its N5 scale discovery GET ``dir/`` and keep every
``<a href>`` that resolves under the base URL, a trailing ``/`` marking a
folder.  So child links are relative and nothing else on the page is: the
"open in viewer" links point into ``/-/`` and are ignored by those parsers.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from volumes import volume_file_kind

from .storage import Entry

_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse}td{padding:.15em 1em .15em 0}"
    ".fmt{color:#666}.open{font-weight:600}"
)


def render_listing(
    url_path: str,
    entries: list[Entry],
    formats: dict[str, str | None],
    self_format: str | None = None,
    open_query: str = "",
) -> str:
    """Render the page for the folder at ``url_path`` (absolute, ending in ``/``).

    ``formats`` maps a child folder's name to its dataset format, if it is one; a file gets the
    link when its name is a volume file's (TIFF, MRC, HDF5, NIfTI).
    ``open_query`` is appended to the "open in viewer" links (a share token).
    """
    title = html.escape(url_path)
    rows = []
    if url_path != "/":
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for e in entries:
        label = e.name + ("/" if e.is_dir else "")
        href = quote(e.name) + ("/" if e.is_dir else "")
        # Files by name alone (a listing may hold thousands): the volumes ngserve reads itself.
        fmt = formats.get(e.name) if e.is_dir else volume_file_kind(e.name)
        extra = ""
        if fmt:
            target = "/-/open" + quote(url_path + e.name) + html.escape(open_query)
            extra = f'<span class="fmt">{fmt}</span> <a class="open" href="{target}">open in viewer</a>'
        size = "" if e.is_dir else f"{e.size:,} B"
        rows.append(
            f'<tr><td><a href="{href}">{html.escape(label)}</a></td>'
            f"<td>{size}</td><td>{extra}</td></tr>"
        )
    banner = ""
    if self_format:
        target = "/-/open" + quote(url_path.rstrip("/")) + html.escape(open_query)
        banner = (
            f'<p>This folder is a <b>{self_format}</b> dataset: '
            f'<a class="open" href="{target}">open in viewer</a></p>'
        )
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f"<title>ngserve {title}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{title}</h1>{banner}<table>{''.join(rows)}</table>"
        '<p class="fmt">served by ngserve &middot; <a href="/-/viewer/">viewer</a></p>'
        "</body></html>"
    )
