"""State <-> URL: encoding as ``neuroglancer.to_url`` does it, parsing every form in use."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

DEMO_VIEWER = "https://neuroglancer-demo.appspot.com/"
# ngserve's built-in viewer; the token path the Python-integration client requires.
NGSERVE_VIEWER_PATH = "/-/viewer/v/ngserve/"
_SAFE = "~@#$&()*!+=:;,.?/'"
TIMEOUT = 10.0
# Only "yes" is remembered: a server started after a first "no" (a notebook kernel lives long) must be found.
_NGSERVE_ORIGINS: set[str] = set()
_TOO_DEEP = "the URL's state is nested too deeply to be a Neuroglancer state"


def encode_fragment(state: dict) -> str:
    """``#!`` plus the state, byte for byte as ``neuroglancer.to_url`` writes it."""
    return "#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")), safe=_SAFE)


def state_url(state: dict, viewer: str) -> str:
    return viewer + encode_fragment(state)


def origin_of(url: str) -> str | None:
    p = urllib.parse.urlsplit(url)
    return f"{p.scheme}://{p.netloc}" if p.scheme in ("http", "https") and p.netloc else None


def is_ngserve(origin: str) -> bool:
    """Whether ``origin`` is an ngserve server: its ``/-/health`` answers JSON with a status."""
    if origin in _NGSERVE_ORIGINS:
        return True
    try:
        with urllib.request.urlopen(origin + "/-/health", timeout=3) as resp:
            body = json.loads(resp.read(1 << 16))
    except (OSError, ValueError):
        return False
    if isinstance(body, dict) and "status" in body:
        _NGSERVE_ORIGINS.add(origin)
        return True
    return False


def mark_ngserve(origin: str) -> None:
    """Remember that ``origin`` is an ngserve: one still starting (``ngserve view``) cannot answer ``/-/health``."""
    _NGSERVE_ORIGINS.add(origin)


def view_url(url: str, view: str, base: str | None = None) -> str:
    """``url`` of data on an ngserve, as the same data's ``/-/<view>/`` view.

    ``base`` is where the server's URL space starts (its origin unless it is served below a
    path); a share token's ``/-/t/<token>/`` prefix stays first, as the server expects.
    """
    base = (base or origin_of(url) or "").rstrip("/")
    if not url.startswith(base + "/"):
        raise ValueError(f"{url} is not below the ngserve at {base}")
    path = url[len(base):]
    if path.startswith("/-/t/"):
        token, _, rest = path[len("/-/t/"):].partition("/")
        return f"{base}/-/t/{token}/-/{view}/{rest}"
    return f"{base}/-/{view}{path}"


def default_viewer(source_urls: list[str]) -> str:
    """ngserve's own viewer when the first http source is served by ngserve, else the demo site."""
    for url in source_urls:
        origin = origin_of(url)
        if origin:
            return origin + NGSERVE_VIEWER_PATH if is_ngserve(origin) else DEMO_VIEWER
    return DEMO_VIEWER


def parse_url(url: str) -> dict:
    """The state JSON of a Neuroglancer URL.

    Accepts ``#!{json}``, ``#!+{json}`` (a partial state, returned as it is),
    the legacy URL-safe JSON (``'`` quotes, ``_`` commas) and ``#!https://…``
    pointing at a state file, which is fetched.  A URL without a ``#`` state is refused
    without fetching it.
    """
    if "#" in url:
        fragment = urllib.parse.urlsplit(url).fragment
    elif url.startswith(("http://", "https://")):
        fragment = ""  # a page, not a state: fetching it would only find HTML
    else:
        fragment = url  # the fragment alone, or the JSON itself
    if not fragment.strip():
        raise ValueError(f"no Neuroglancer state in this URL: {url} has no '#!' part")
    text = urllib.parse.unquote(fragment)
    text = text[1:] if text.startswith("!") else text
    text = text[1:] if text.startswith("+") else text
    if text.startswith(("http://", "https://")):
        return _fetch_state(text)
    try:
        obj = json.loads(text)
    except RecursionError:  # json recurses once per nesting level; no state nests this deep
        raise ValueError(_TOO_DEEP) from None
    except ValueError:
        from neuroglancer.url_state import url_safe_to_json  # the legacy form's reference decoder

        try:
            obj = json.loads(url_safe_to_json(text))
        except RecursionError:
            raise ValueError(_TOO_DEEP) from None
        except ValueError:
            raise ValueError("the URL carries no Neuroglancer state after '#!'") from None
    if not isinstance(obj, dict):
        raise ValueError("the URL's state is not a JSON object")
    return obj


def _fetch_state(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            obj = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ValueError(f"state {url}: HTTP {exc.code}") from None
    except RecursionError:  # a hostile or broken state file nested past json's recursion limit
        raise ValueError(f"state {url} is nested too deeply to be a Neuroglancer state") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"state {url}: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"state {url} is not a JSON object")
    return obj


SHORTEN_RETRIES = 5  # answers 429 (ngserve rate-limits short links per client) before giving up
SHORTEN_MAX_WAIT = 120.0  # seconds: a longer Retry-After is reported, not slept through


def shorten(state: dict, server: str) -> str:
    """Store ``state`` on the ngserve at ``server``; the short URL it answers.

    A 429 is waited out as its Retry-After asks (a few times), so a batch of links
    keeps going at the rate the server allows.
    """
    body = json.dumps(state).encode()
    attempt = 0
    while True:
        attempt += 1
        req = urllib.request.Request(
            server.rstrip("/") + "/-/api/states", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return json.loads(resp.read())["url"]
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode(errors="replace").strip()
            wait = _retry_after(exc.headers.get("Retry-After")) if exc.code == 429 else None
            if wait is None or wait > SHORTEN_MAX_WAIT or attempt > SHORTEN_RETRIES:
                raise ValueError(f"{server} refused the state: HTTP {exc.code} {detail}") from None
            time.sleep(wait)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot store the state on {server}: {exc}") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After given in seconds (ngserve's form), else None."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
