"""Property-based tests: every parser of outside input answers cleanly, whatever it is given.

"Cleanly" means a value, None, or the module's own documented error; any other
exception is a bug (it would be a 500 or a traceback).  Where it is cheap, the
answer is checked too, against a plain model of what it must be.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from server import tokens
from server.config import ConfigError
from server.config_file import config_from_toml, load_config
from server.paths import VIEWS, is_visible, parse_target, split_path, token_path
from server.ranges import Unsatisfiable, parse_range
from server.states import StateError, state_body
from volumes.stats import _percentiles

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that hits the interesting characters of each parser often, plus anything at all.
_PATHY = st.lists(
    st.sampled_from(list("/%.\\\x00aZ09-_~ 2fFeE5cC") + ["%2e", "%2f", "%5c", "%00", "%ff", "%c3", ".."])
).map("".join)
_ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]))


# -- paths.split_path ---------------------------------------------------------------------
@FAST
@given(st.one_of(_PATHY, _ANY_TEXT))
def test_split_path_gives_only_safe_segments(raw):
    segments = split_path(raw)
    if segments is None:
        return
    for seg in segments:
        assert seg and seg not in (".", "..")
        assert not set(seg) & {"/", "\\", "\x00"}
        assert is_visible(seg)


_SEGMENT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1).filter(
    lambda s: s not in (".", "..") and not set(s) & {"/", "\\", "\x00"} and is_visible(s)
)


@FAST
@given(st.lists(_SEGMENT, max_size=6), st.booleans())
def test_split_path_decodes_what_a_client_encodes(segments, trailing):
    raw = "/" + "/".join(quote(s, safe="") for s in segments) + ("/" if trailing else "")
    assert split_path(raw) == segments


# -- ranges.parse_range -------------------------------------------------------------------
_DIGITS = st.one_of(st.text("0123456789", max_size=25), st.text("0123456789", min_size=4290, max_size=4400),
                    st.integers(0, 2**70).map(str))
_RANGE_HEADER = st.one_of(
    st.builds(lambda a, b, sp: f"bytes{sp}={sp}{a}{sp}-{sp}{b}{sp}", _DIGITS, _DIGITS, st.sampled_from(["", " ", "\t"])),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, 50).map(str), st.integers(-5, 50).map(str)),
    _ANY_TEXT,
    st.text("bytes=0123456789-, \u0663\u00b2\u2007\n\x0bBYTES\u017f", max_size=30),
)


def _model(header: str, size: int):
    """RFC 9110 14.1.2 for one range, with Python's unbounded integers (ASCII spaces tolerated anywhere)."""
    space = string.whitespace
    spec = header.strip(space)
    if not spec[:5].lower() == "bytes":
        return None
    unit_rest = spec[5:].lstrip(space)
    if not unit_rest.startswith("="):
        return None
    first_s, sep, last_s = unit_rest[1:].partition("-")
    first_s, last_s = first_s.strip(space), last_s.strip(space)
    if not sep or not set(first_s + last_s) <= set(string.digits) or not (first_s or last_s):
        return None
    if not first_s:
        n = int(last_s)
        if n == 0 or size == 0:
            return "416"
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None
    if first >= size:
        return "416"
    return first, min(last, size - 1)


@FAST
@given(_RANGE_HEADER, st.one_of(st.integers(0, 100), st.integers(0, 2**63)))
def test_parse_range_answers_within_the_file_exactly_as_the_rfc_says(header, size):
    try:
        got = parse_range(header, size)
    except Unsatisfiable:
        got = "416"
    if isinstance(got, tuple):
        first, last = got
        assert 0 <= first <= last < size
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # the model may use int() on any length
    try:
        assert got == _model(header, size)
    finally:
        sys.set_int_max_str_digits(old)


# -- states.state_body --------------------------------------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def _deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return ('{"layers": ' + opener * depth + "0" + closer * depth + "}").encode()


@FAST
@given(st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda layers, extra: json.dumps({"layers": layers, "x": extra}).encode(),
              st.one_of(st.lists(_JSON, max_size=3), st.dictionaries(st.text(max_size=3), _JSON, max_size=3)), _JSON),
    st.builds(_deep, st.integers(0, 3000), st.sampled_from(["[", '{"a":'])),
))
def test_state_body_is_strict_json_of_a_state_or_a_state_error(data):
    try:
        body = state_body(data)
    except StateError as exc:
        assert "\n" not in str(exc)
        return

    def refuse(name):
        raise AssertionError(f"stored {name}: the viewer's JSON.parse refuses it")

    state = json.loads(body, parse_constant=refuse)
    assert isinstance(state, dict) and isinstance(state["layers"], (list, dict))


# -- tokens and the /-/t/ path ---------------------------------------------------------------
SECRET = b"s" * 32
NOW = 1_700_000_000


@FAST
@given(st.one_of(
    _ANY_TEXT,
    st.builds(lambda a, b: f"ngs1.{a}.{b}", st.text(string.ascii_letters + string.digits + "-_=."), st.text()),
))
def test_verify_gives_claims_or_a_token_error(token):
    try:
        claims = tokens.verify(SECRET, token, now=NOW)
    except tokens.TokenError as exc:
        assert "\n" not in str(exc)
        return
    assert claims.expires > NOW


# A payload we signed ourselves but did not write with mint(): verify must still answer cleanly.
_CLAIM_VALUE = st.one_of(_JSON, st.integers(-(2**80), 2**80), st.floats(), st.just("x" * 5000 + "1"))


@FAST
@given(st.one_of(
    st.dictionaries(st.sampled_from(["k", "e", "m", "p", "u"]), _CLAIM_VALUE),
    _JSON,
    st.text(),
))
def test_verify_answers_cleanly_for_any_signed_payload(payload):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    body = tokens._b64(text.encode("utf-8", "surrogatepass"))
    token = f"{tokens.PREFIX}.{body}.{tokens._sign(SECRET, body)}"
    try:
        tokens.verify(SECRET, token, now=NOW)
    except tokens.TokenError as exc:
        assert "\n" not in str(exc)


@FAST
@given(_ANY_TEXT, _ANY_TEXT, st.integers(1, 10**9), st.data())
def test_a_minted_token_verifies_and_no_single_change_does(mount, path, ttl, data):
    token = tokens.mint(SECRET, mount, path, ttl, now=NOW)
    claims = tokens.verify(SECRET, token, now=NOW)
    assert (claims.kind, claims.mount, claims.path, claims.expires) == (tokens.SHARE, mount, path.strip("/"), NOW + ttl)
    i = data.draw(st.integers(0, len(token) - 1))
    c = data.draw(st.characters(codec="utf-8", exclude_categories=["Cs"]).filter(lambda c: c != token[i]))
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, token[:i] + c + token[i + 1 :], now=NOW)


@FAST
@given(st.one_of(_PATHY, _ANY_TEXT, st.builds(lambda a: "/-/t/" + a, _PATHY), st.builds(lambda a: "/-/zarr/" + a, _PATHY),
                 st.builds(lambda a: "/-/t/tok/-/n5/" + a, _PATHY), st.builds(lambda a: "/-/open/" + a, _PATHY)))
def test_parse_target(raw):
    """Any request path is one Target or None; its data segments are safe, and a share path round-trips."""
    target = parse_target(raw)
    if target is None or target.kind == "server":
        return
    assert target.kind in ("data", "share", "open", "view") and (target.view in VIEWS) == (target.kind == "view")
    assert not (target.segments and target.segments[0] == "-")
    for seg in target.segments:
        assert seg and seg not in (".", "..") and not {"/", "\\", "\x00"} & set(seg)
    if target.token is not None:
        assert target.token and "/" not in target.token and raw.startswith("/-/t/" + target.token + "/")
        again = parse_target(target.prefix + target.raw) if target.view else parse_target(token_path(target.token, target.raw))
        assert again._replace(raw="") == target._replace(raw="")  # the same path, maybe with fewer empty segments


# -- config_file ----------------------------------------------------------------------------
_ODD_NUMBERS = st.sampled_from([0, -1, 1, 65536, 2**63, 10**400, float("inf"), float("-inf"), float("nan"), 1e300, 0.5])
_ODD_TEXT = st.sampled_from([".", "data", "/", "webdav+https://h/x", "https://u:p@h/", "public", "users", "token",
                             "12h", "0", "0s", "1e999", "9" * 400, "512MiB", "-1", "NGSERVE_TEST_UNSET", "HOME",
                             "missing.pem", "data/secret", "a\x00b", "", "nan", "inf", "10.0.0.0/8", "::1", "alice"])
_LEAF = st.one_of(st.booleans(), st.integers(), st.floats(), st.datetimes(), _ODD_NUMBERS, _ODD_TEXT, _ANY_TEXT)
# Per key: mostly the type the key wants, with odd contents; now and then anything at all.
_STR = st.one_of(_ODD_TEXT, _ODD_TEXT, _ANY_TEXT, _LEAF)
_NUM = st.one_of(_ODD_NUMBERS, st.integers(), st.floats(), _ODD_TEXT, _LEAF)
_BOOL = st.one_of(st.booleans(), st.booleans(), _LEAF)
_LIST = st.one_of(st.lists(_STR, max_size=3), _LEAF)


_TOML_VALUE = st.recursive(
    _LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


def _table(**keys) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional=keys)


_MOUNT = {"name": "", "source": "data"}
# Each table on its own, the rest valid: the loader stops at the first error, so a draw that
# spreads odd values over every table would rarely get past the first one.
_CONFIG_TABLES = {
    "server": _table(host=_STR, port=_NUM, workers=_NUM, public_url=_STR, data_dir=_STR, cors_origins=_LIST,
                     open=_BOOL, access_log=_BOOL).map(lambda t: {"server": t, "mounts": [_MOUNT]}),
    "auth": _table(secret_env=_STR, secret_file=_STR, session_ttl=_NUM, trusted_proxies=_LIST,
                   cookie_secure=_BOOL, secret=_STR).map(lambda t: {"auth": t, "mounts": [_MOUNT]}),
    "mount": _table(name=_STR, source=_STR, access=_STR, users=_LIST, upstream=_LEAF).map(
        lambda t: {"mounts": [t], "auth": {"secret_file": "data/secret", "trusted_proxies": ["::1"]}}),
    "upstream": _table(username=_STR, password_env=_STR, password_file=_STR, bearer_env=_STR, bearer_file=_STR,
                       client_cert=_STR, client_key=_STR, ca_file=_STR, connect_timeout=_NUM, read_timeout=_NUM,
                       retries=_NUM, metadata_ttl=_NUM, chunk_cache_bytes=_NUM, password=_STR).map(
        lambda t: {"mounts": [{"name": "", "source": "webdav+https://h/x", "upstream": t}]}),
    "users": st.lists(_table(name=_STR, password_hash=_STR, password_hash_file=_STR, password_hash_env=_STR),
                      max_size=2).map(lambda t: {"users": t, "mounts": [_MOUNT]}),
    "tables": st.dictionaries(st.sampled_from(["server", "auth", "mounts", "users", "other"]), _TOML_VALUE),
}


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    (folder / "data").mkdir()
    (folder / "data" / "secret").write_text("0123456789abcdef0123456789abcdef")
    return folder


@pytest.mark.parametrize("table", list(_CONFIG_TABLES))
@settings(FAST, max_examples=150)
@given(data=st.data())
def test_config_from_any_table_is_a_config_or_a_config_error(config_dir, table, data):
    raw = data.draw(_CONFIG_TABLES[table], label="raw")
    try:
        config_from_toml(raw, config_dir).validate()  # what `ngserve serve --config` does with it
    except ConfigError:
        pass  # may quote a value with a line break: the CLI prints it escaped, on one line


@settings(FAST, max_examples=200)
@given(st.one_of(st.binary(max_size=300), _ANY_TEXT.map(str.encode),
                 st.text("[]=\"'.,{}\n abc0123456789_-#", max_size=120).map(str.encode)))
def test_load_config_of_any_file_is_a_config_or_a_config_error(config_dir, data):
    path = config_dir / "ngserve.toml"
    path.write_bytes(data)
    try:
        load_config(path).validate()
    except ConfigError:
        pass


# -- volumes.stats (the contrast window of any array a dataset may hold) -------------------------
_DTYPES = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(), hnp.unicode_string_dtypes(), hnp.array_dtypes())


@FAST
@given(hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6)))
def test_contrast_of_any_array_is_a_finite_window_the_dtype_can_hold(data):
    lo, hi = _percentiles(data, 0.5, 99.5)
    assert lo < hi
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        assert info.min <= lo and hi <= info.max
    else:  # a state carries it as JSON, which has no NaN or Infinity
        assert np.isfinite([lo, hi]).all()
