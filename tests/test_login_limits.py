"""Password guessing backs off per user and per address; /-/login refuses cross-site posts.

The app runs in-process on 127.0.0.1; clients connect from other loopback
addresses (127.0.0.2, ...) to stand for other machines.
"""

from __future__ import annotations

import asyncio
import base64
import threading

import aiohttp
import pytest

from server import auth, create_app
from server.config import AuthConfig, MountConfig, ServerConfig, UserConfig
from server.passwords import hash_password, verify_password
from server.throttle import FailureBackoff, RateLimiter, Throttled

SECRET = b"test-secret-0123456789abcdef-0123456789"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the throttles themselves, on a clock the test turns ---------------------------------------
def test_backoff_starts_after_threshold_doubles_and_is_bounded():
    clock = Clock()
    b = FailureBackoff(threshold=5, base=30, max_delay=900, window=900, clock=clock)
    for _ in range(4):
        b.check("alice")
        b.failed("alice")
    b.check("alice")  # four failures: still free
    b.failed("alice")
    waits = []
    for _ in range(10):
        with pytest.raises(Throttled) as exc:
            b.check("alice")
        waits.append(exc.value.retry_after)
        clock.now += exc.value.retry_after  # wait it out, then fail again
        b.check("alice")
        b.failed("alice")
    assert waits[:4] == [30, 60, 120, 240]
    assert max(waits) == 900 and waits[-1] == 900  # never more than max_delay
    b.check("bob")  # other keys are untouched


def test_backoff_success_resets_and_old_failures_are_forgotten():
    clock = Clock()
    b = FailureBackoff(threshold=3, base=10, window=60, clock=clock)
    for _ in range(3):
        b.failed("k")
    with pytest.raises(Throttled):
        b.check("k")
    b.succeeded("k")
    b.check("k")
    b.failed("k")
    b.failed("k")
    clock.now += 61  # a window after the last failure: forgotten
    b.failed("k")
    b.check("k")


def test_throttles_keep_a_bounded_number_of_keys():
    clock = Clock()
    b = FailureBackoff(threshold=1, max_keys=100, clock=clock)
    r = RateLimiter(per_minute=1, burst=1, max_keys=100, clock=clock)
    for i in range(10_000):
        b.failed(f"name-{i}")
        r.take(f"addr-{i}")
    assert b._state.used == 100 and r._buckets.used == 100


def test_rate_limiter_allows_a_burst_then_the_rate():
    clock = Clock()
    r = RateLimiter(per_minute=30, burst=10, clock=clock)
    for _ in range(10):
        r.take("a")
    with pytest.raises(Throttled) as exc:
        r.take("a")
    assert exc.value.retry_after == pytest.approx(2.0) and exc.value.seconds == 2
    r.take("b")  # another client has its own bucket
    clock.now += 2.0
    r.take("a")
    with pytest.raises(Throttled):
        r.take("a")


# -- over HTTP ---------------------------------------------------------------------------------------
@pytest.fixture
async def site(aiohttp_server, tmp_path, monkeypatch):
    """A protected mount; ``site.checks`` counts password verifications (scrypt runs)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.bin").write_bytes(b"secret bytes")
    config = ServerConfig(
        mounts=[MountConfig("lab", str(tmp_path / "data"), access="users")],
        data_dir=tmp_path / "state",
        auth=AuthConfig(secret=SECRET, cookie_secure=False),
        users=[UserConfig(n, hash_password(p, n=1024)) for n, p in PASSWORDS.items()],
        public_url="https://ng.example.org",
    )
    checks = []

    def counting(password, stored):
        checks.append(threading.current_thread().name)
        return verify_password(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    server = await aiohttp_server(create_app(config))
    server.checks = checks
    server.base = f"http://127.0.0.1:{server.port}"
    return server


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def fetch(source: str, method: str, url: str, **kwargs) -> tuple[int, dict, str]:
    """One request from the loopback address ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.request(method, url, allow_redirects=False, **kwargs) as r:
            return r.status, dict(r.headers), await r.text()


async def test_basic_auth_backs_off_per_user_from_any_address(site):
    url = site.base + "/lab/a.bin"
    for i in range(auth.USER_FAILURES):
        assert (await fetch("127.0.0.1", "GET", url, headers=basic("alice", f"guess-{i}")))[0] == 401
    checks = len(site.checks)
    for source in ("127.0.0.1", "127.0.0.2"):  # the right password, from another machine too
        status, headers, text = await fetch(source, "GET", url, headers=basic("alice", PASSWORDS["alice"]))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert text.count("\n") == 1 and "too many failed sign-ins" in text
    assert len(site.checks) == checks  # refused without running scrypt
    # Another user at the same address is not held up by alice's name being guessed.
    assert (await fetch("127.0.0.1", "GET", url, headers=basic("bob", PASSWORDS["bob"])))[0] == 200


async def test_parallel_requests_with_the_right_password_are_one_attempt(site):
    """A client's first burst of chunk reads, all with the same basic credentials, before
    any was verified: one scrypt run, no backoff, every read answered."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.8", 0))
    async with aiohttp.ClientSession(connector=connector, headers=basic("alice", PASSWORDS["alice"])) as session:
        async def read() -> int:
            async with session.get(site.base + "/lab/a.bin") as r:
                await r.read()
                return r.status

        assert await asyncio.gather(*(read() for _ in range(3 * auth.USER_FAILURES))) == [200] * 3 * auth.USER_FAILURES
    assert len(site.checks) == 1


async def test_basic_auth_backs_off_per_address_across_names(site):
    url = site.base + "/lab/a.bin"
    for i in range(auth.ADDRESS_FAILURES):  # a spray: one guess for each of many names
        assert (await fetch("127.0.0.3", "GET", url, headers=basic(f"user{i}", "password1")))[0] == 401
    status, headers, _ = await fetch("127.0.0.3", "GET", url, headers=basic("bob", PASSWORDS["bob"]))
    assert status == 429 and "Retry-After" in headers
    assert (await fetch("127.0.0.4", "GET", url, headers=basic("bob", PASSWORDS["bob"])))[0] == 200


async def test_a_success_resets_the_count(site):
    url = site.base + "/lab/a.bin"
    for _ in range(2):
        for i in range(auth.USER_FAILURES - 1):
            assert (await fetch("127.0.0.5", "GET", url, headers=basic("bob", f"typo-{i}")))[0] == 401
        assert (await fetch("127.0.0.5", "GET", url, headers=basic("bob", PASSWORDS["bob"])))[0] == 200


async def test_login_form_backs_off_too(site):
    for i in range(auth.USER_FAILURES):
        status, _, _ = await fetch("127.0.0.6", "POST", site.base + "/-/login", data={"user": "alice", "password": f"g{i}"})
        assert status == 401
    status, headers, page = await fetch("127.0.0.6", "POST", site.base + "/-/login",
                                        data={"user": "alice", "password": PASSWORDS["alice"]})
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in page and "Set-Cookie" not in headers


@pytest.mark.parametrize("headers, allowed", [
    ({}, True),  # curl or a script: no browser, no visitor to abuse
    ({"Origin": "{base}", "Sec-Fetch-Site": "same-origin"}, True),  # our own form
    ({"Origin": "https://ng.example.org"}, True),  # through the public URL (a TLS proxy)
    ({"Referer": "{base}/-/login?next=/lab/"}, True),
    ({"Origin": "https://evil.example"}, False),
    ({"Origin": "null"}, False),  # a sandboxed frame or a no-referrer page
    ({"Sec-Fetch-Site": "cross-site"}, False),
    ({"Sec-Fetch-Site": "same-site", "Origin": "https://other.ng.example.org"}, False),
    ({"Referer": "https://evil.example/page"}, False),
    ({"Origin": "http://ng.example.org"}, False),  # not the public URL's scheme
])
async def test_login_refuses_cross_site_posts(site, headers, allowed):
    headers = {k: v.format(base=site.base) for k, v in headers.items()}
    form = {"user": "bob", "password": PASSWORDS["bob"], "next": "/lab/"}
    status, answer, text = await fetch("127.0.0.7", "POST", site.base + "/-/login", data=form, headers=headers)
    if allowed:
        assert status == 303 and "ngserve_session=" in answer["Set-Cookie"]
    else:
        assert status == 403 and "Set-Cookie" not in answer
        assert text.count("\n") == 1 and "another site" in text
