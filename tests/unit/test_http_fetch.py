"""gateway.http_fetch against real local HTTP(S) servers: bodies, limits, TLS, JWKS refresh.

The raw server below writes its answers byte by byte where http.server would not
(chunked bodies, interim responses, no length, endless bodies, garbage): the HTTP
itself is httpx's, the guarantees around it (limits, no redirects, https only,
nothing taken from the environment, messages without the query) are the module's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import trio
import trio.testing

from gateway.http_fetch import (
    HttpFetchError,
    JwksRefresher,
    JwksRefreshers,
    UnsafeUrl,
    fetch,
    fetch_json,
)
from policies.auth.jwks import JwksKeySet
from policies.auth.jwt_validation import JwtValidator
from policies.config import OAuthBearerConfig
from tests.certs import make_ca
from tests.jwks_server import JWKS_PATH, JwksServer, SigningKey, jwks_of, make_ec_key

BIG = 2 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        if route == "/json":
            self._json(200, {"hello": "world", "query": self.path.partition("?")[2]})
        elif route == "/headers":
            self._json(200, {k.lower(): v for k, v in self.headers.items()})
        elif route == "/chunked":
            self._raw(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b'5;ext=1\r\n{"a":\r\n'
                b"a\r\n [1, 2, 3]\r\n"
                b"1\r\n}\r\n"
                b"0\r\nX-Trailer: yes\r\n\r\n"
            )
        elif route == "/eof":
            self._raw(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"until": "eof"}')
        elif route == "/interim":
            self._raw(
                b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                b'HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{"final": 1}\n'
            )
        elif route == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            self._write_quietly(b"x" * BIG)
        elif route == "/big-chunked":
            chunk = b"y" * 65536
            body = b"".join(b"10000\r\n" + chunk + b"\r\n" for _ in range(40)) + b"0\r\n\r\n"
            self._write_quietly(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        elif route == "/big-eof":
            self._write_quietly(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * BIG)
        elif route in ("/endless", "/endless-chunked"):
            self._endless(chunked=route == "/endless-chunked")
        elif route == "/slow":
            time.sleep(1.5)
            self._json(200, {})
        elif route == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/text":
            self._raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif route == "/error-text":
            self._raw(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 4\r\n\r\ndown")
        elif route == "/gzip":
            self._raw(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}")
        elif route == "/garbage":
            self._raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        elif route == "/truncated":
            self._raw(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"short"')
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        self._json(
            200,
            {
                "form": {k: v[0] for k, v in parse_qs(raw).items()},
                "content_type": self.headers.get("Content-Type"),
                "authorization": self.headers.get("Authorization"),
            },
        )

    def _endless(self, *, chunked: bool) -> None:
        """A body that never ends: only a client that stops reading gets an answer."""
        framing = b"Transfer-Encoding: chunked" if chunked else b"Connection: close"
        chunk = b"e" * 65536
        if chunked:
            chunk = b"10000\r\n" + chunk + b"\r\n"
        with contextlib.suppress(OSError):  # the client hung up: the point of the test
            self.wfile.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
            while True:
                self.wfile.write(chunk)
        self.close_connection = True

    def _write_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the client gave up on the oversized body
            self.wfile.write(data)
        self.close_connection = True


class _Server:
    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


# --------------------------------------------------------------------------- fetch


async def test_json_with_content_length(server: _Server) -> None:
    status, body = await fetch_json(server.base + "/json?a=1&b=2", timeout_s=5)
    assert status == 200
    assert body == {"hello": "world", "query": "a=1&b=2"}


async def test_request_headers(server: _Server) -> None:
    _, sent = await fetch_json(server.base + "/headers", headers={"X-Test": "1"}, timeout_s=5)
    port = server.base.rsplit(":", 1)[1]
    assert sent["host"] == f"127.0.0.1:{port}"
    assert sent["x-test"] == "1"
    assert sent["accept-encoding"] == "identity"
    assert sent["connection"] == "close"


async def test_chunked_body_with_extensions_and_trailers(server: _Server) -> None:
    assert await fetch_json(server.base + "/chunked", timeout_s=5) == (200, {"a": [1, 2, 3]})


async def test_body_until_close_and_interim_responses(server: _Server) -> None:
    assert await fetch_json(server.base + "/eof", timeout_s=5) == (200, {"until": "eof"})
    assert await fetch_json(server.base + "/interim", timeout_s=5) == (200, {"final": 1})


async def test_post_form(server: _Server) -> None:
    status, echoed = await fetch_json(
        server.base + "/token",
        method="POST",
        form={"grant_type": "client_credentials", "scope": "a b"},
        headers={"Authorization": "Basic Zm9vOmJhcg=="},
        timeout_s=5,
    )
    assert status == 200
    assert echoed["form"] == {"grant_type": "client_credentials", "scope": "a b"}
    assert echoed["content_type"] == "application/x-www-form-urlencoded"
    assert echoed["authorization"] == "Basic Zm9vOmJhcg=="
    response = await fetch(server.base + "/x", method="POST", body=b"k=v", timeout_s=5)
    assert json.loads(response.body)["form"] == {"k": "v"}
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("route", ["/big", "/big-chunked", "/big-eof"])
async def test_oversized_body_is_refused(server: _Server, route: str) -> None:
    with pytest.raises(HttpFetchError, match="exceeds"):
        await fetch(server.base + route, timeout_s=5, max_body_bytes=1024 * 1024)


async def test_a_declared_oversized_body_is_refused_before_reading_it(server: _Server) -> None:
    with pytest.raises(HttpFetchError, match=f"body of {BIG} bytes exceeds 1048576 bytes"):
        await fetch(server.base + "/big", timeout_s=5, max_body_bytes=1024 * 1024)


@pytest.mark.parametrize("route", ["/endless", "/endless-chunked"])
async def test_an_endless_body_is_cut_off_at_the_limit(server: _Server, route: str) -> None:
    """Streamed, not buffered to the end: a body that never ends still gives an answer."""
    with pytest.raises(HttpFetchError, match="exceeds 262144 bytes"):
        await fetch(server.base + route, timeout_s=30, max_body_bytes=256 * 1024)


async def test_nothing_is_taken_from_the_environment(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No proxy from *_PROXY variables, no credentials from .netrc (httpx's trust_env)."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, dead_proxy)
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login someone password leaked\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        status, sent = await fetch_json(server.base + "/headers", timeout_s=5)
    assert status == 200
    assert "authorization" not in sent
    assert "proxy-authorization" not in sent


async def test_timeout(server: _Server, autojump_clock: trio.testing.MockClock) -> None:
    """The fetch ends at its deadline, not when the slow server answers (1.5 s later).

    On trio's virtual clock, which jumps to the next deadline whenever every task waits:
    the elapsed time is exact however loaded the machine is.
    """
    started = trio.current_time()
    with pytest.raises(HttpFetchError, match=r"no complete answer within 0\.3s"):
        await fetch(server.base + "/slow", timeout_s=0.3)
    assert trio.current_time() - started == pytest.approx(0.3)


async def test_redirects_are_not_followed(server: _Server) -> None:
    response = await fetch(server.base + "/redirect", timeout_s=5)
    assert response.status == 302
    assert response.headers["location"] == "http://127.0.0.1:1/elsewhere"


async def test_json_errors(server: _Server) -> None:
    with pytest.raises(HttpFetchError, match="not JSON"):
        await fetch_json(server.base + "/text", timeout_s=5)
    assert await fetch_json(server.base + "/error-text", timeout_s=5) == (503, None)
    assert await fetch_json(server.base + "/nothing", timeout_s=5) == (404, {"error": "not_found"})


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/garbage", "invalid HTTP response: illegal status line"),
        ("/gzip", "unsupported content-encoding"),
        ("/truncated", "peer closed connection without sending complete message body"),
    ],
)
async def test_malformed_responses(server: _Server, route: str, message: str) -> None:
    with pytest.raises(HttpFetchError, match=message) as info:
        await fetch(server.base + route + "?secret=1", timeout_s=5)
    assert "secret" not in str(info.value)  # messages leave the query string out


async def test_the_query_string_is_not_logged(
    server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logs each request's full URL at INFO; the module keeps that logger quiet."""
    with caplog.at_level(logging.DEBUG):
        await fetch(server.base + "/json?api_key=hunter2", timeout_s=5)
    assert "hunter2" not in caplog.text


async def test_connection_refused() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(HttpFetchError, match="cannot connect"):
            await fetch(f"http://127.0.0.1:{port}/", timeout_s=5)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/jwks.json",
        "http://10.0.0.1/jwks.json",
        "ftp://127.0.0.1/x",
        "https://user:pw@issuer.example/jwks.json",
        "https:///nohost",
        "http://127.0.0.1\\@evil.example/",  # a parser differential would reach evil.example
        "https://issuer.example:99999/jwks.json",
    ],
)
async def test_unsafe_urls(url: str) -> None:
    with pytest.raises(UnsafeUrl) as info:
        await fetch(url, timeout_s=1)
    assert "pw" not in str(info.value)


async def test_header_injection_is_refused(server: _Server) -> None:
    with pytest.raises(HttpFetchError, match="invalid HTTP header"):
        await fetch(server.base + "/json", headers={"X-A": "1\r\nX-B: 2"}, timeout_s=5)


async def test_https_with_a_private_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    srv = _Server(tls=ca.issue_server())
    try:
        status, body = await fetch_json(srv.base + "/json", timeout_s=5, ca_file=str(ca.cert_path))
        assert (status, body["hello"]) == (200, "world")
        with pytest.raises(HttpFetchError, match="certificate verif"):
            await fetch(srv.base + "/json", timeout_s=5)  # system trust store: unknown CA
    finally:
        srv.close()


async def test_https_checks_the_host_name(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    srv = _Server(tls=ca.issue_server(["other.example"]))
    try:
        with pytest.raises(HttpFetchError, match="certificate verif"):
            await fetch(srv.base + "/json", timeout_s=5, ca_file=str(ca.cert_path))
    finally:
        srv.close()


# ---------------------------------------------------------------------- JWKS refresh


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.reads = 0  # run_periodic reads the clock once per poll

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.fixture(scope="module")
def keys() -> tuple[SigningKey, SigningKey]:
    return make_ec_key("k1"), make_ec_key("k2")


@pytest.fixture
def jwks_server(keys: tuple[SigningKey, SigningKey]) -> Iterator[JwksServer]:
    with JwksServer(jwks_of(keys[0])) as srv:
        yield srv


def refresher_for(server: JwksServer, clock: FakeClock, **options: Any) -> JwksRefresher:
    key_set = JwksKeySet(source=server.jwks_url, **options)
    # A generous fetch timeout: the local server answers at once unless the machine is busy.
    return JwksRefresher(key_set, jwks_url=server.jwks_url, timeout_s=30, clock=clock)


async def test_refresh_is_single_flight(jwks_server: JwksServer) -> None:
    clock = FakeClock()
    refresher = refresher_for(jwks_server, clock)
    jwks_server.set_delay(0.3)
    results: list[bool] = []

    async def one() -> None:
        results.append(await refresher.refresh())

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(one)
    assert results == [True] * 8
    assert jwks_server.request_count(JWKS_PATH) == 1
    assert refresher.key_set.kids == {"k1"}
    # Rate limited: a second refresh right away does not fetch.
    assert await refresher.refresh() is False
    assert jwks_server.request_count(JWKS_PATH) == 1


async def test_unknown_kid_refresh_cycle(
    jwks_server: JwksServer, keys: tuple[SigningKey, SigningKey]
) -> None:
    """What a SASL session does on KeyRefreshNeeded: refresh, then look up again."""
    clock = FakeClock()
    refresher = refresher_for(jwks_server, clock, min_refresh_interval_s=30)
    assert await refresher.refresh()
    jwks_server.set_keys(*keys)  # the issuer rotates in k2
    clock.now += 31
    lookup = refresher.key_set.lookup("k2", clock.now)
    assert lookup.key is None and lookup.refresh_needed  # the lookup claimed the refresh
    assert await refresher.refresh()
    assert refresher.key_set.lookup("k2", clock.now).key is not None
    # A made-up kid right after: rate-limited, no fetch, no refresh asked for.
    assert not refresher.key_set.lookup("nope", clock.now).refresh_needed
    assert await refresher.refresh() is False
    assert jwks_server.request_count(JWKS_PATH) == 2


async def test_failed_refresh_keeps_the_old_keys(
    jwks_server: JwksServer, keys: tuple[SigningKey, SigningKey]
) -> None:
    clock = FakeClock()
    refresher = refresher_for(jwks_server, clock, min_refresh_interval_s=10)
    assert await refresher.refresh()
    jwks_server.fail_with(503)
    clock.now += 11
    assert await refresher.refresh() is False
    assert refresher.key_set.kids == {"k1"}
    assert not refresher.key_set.refresh_in_flight(clock.now)
    jwks_server.fail_with(None)
    jwks_server.set_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})  # no usable key
    clock.now += 11
    assert await refresher.refresh() is False
    assert refresher.key_set.kids == {"k1"}
    jwks_server.set_keys(keys[1])
    clock.now += 11
    assert await refresher.refresh() is True
    assert refresher.key_set.kids == {"k2"}


async def test_waiter_takes_over_when_the_fetching_task_is_cancelled(
    jwks_server: JwksServer,
) -> None:
    clock = FakeClock()
    refresher = refresher_for(jwks_server, clock)
    jwks_server.set_delay(0.4)
    result: list[bool] = []

    async def waiter() -> None:
        await trio.sleep(0.05)
        result.append(await refresher.refresh())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        with trio.move_on_after(0.15):
            await refresher.refresh()  # the client that triggered the fetch goes away
    assert result == [True]
    assert refresher.key_set.kids == {"k1"}
    assert refresher.fetches == 2


async def test_jwks_file(tmp_path: Path, keys: tuple[SigningKey, SigningKey]) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(keys[0])))
    clock = FakeClock()
    refresher = JwksRefresher(JwksKeySet(), jwks_file=str(path), clock=clock)
    assert await refresher.refresh()
    assert refresher.key_set.kids == {"k1"}
    path.write_text(json.dumps(jwks_of(keys[1])))
    clock.now += 3600
    assert await refresher.refresh()
    assert refresher.key_set.kids == {"k2"}
    path.unlink()
    clock.now += 3600
    assert await refresher.refresh() is False
    assert refresher.key_set.kids == {"k2"}


async def test_run_periodic(jwks_server: JwksServer) -> None:
    clock = FakeClock()
    refresher = refresher_for(jwks_server, clock, refresh_interval_s=600, min_refresh_interval_s=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(refresher.run_periodic, poll_interval_s=0.01))
        await _wait_for(lambda: refresher.key_set.loaded)
        polled = clock.reads
        await _wait_for(lambda: clock.reads >= polled + 5)
        assert jwks_server.request_count(JWKS_PATH) == 1  # fresh: five polls, nothing to do
        clock.now += 600
        # The refresh is done once the key set is updated, not when the server has
        # counted the request (cancelling between the two raced on a loaded machine).
        await _wait_for(lambda: refresher.key_set.updated_at == clock.now)
        nursery.cancel_scope.cancel()
    assert jwks_server.request_count(JWKS_PATH) == 2


async def _wait_for(condition: Any, timeout_s: float = 60.0) -> None:
    """Wait for ``condition``; the timeout only ends a test that would otherwise hang."""
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.01)


async def test_refreshers_for_a_validator(jwks_server: JwksServer) -> None:
    config = OAuthBearerConfig.model_validate(
        {
            "issuers": [
                {"issuer": "https://a.example", "audience": "gw", "jwks_url": jwks_server.jwks_url,
                 "principal_prefix": "a/"},
                {"issuer": "https://b.example", "audience": "gw", "algorithms": ["HS256"],
                 "hmac_secret": "x" * 32, "principal_prefix": "b/"},
            ]
        }
    )  # fmt: skip
    validator = JwtValidator.from_config(config, time.time())
    refreshers = JwksRefreshers.for_validator(validator, config)
    assert set(refreshers.by_issuer) == {"https://a.example"}
    await refreshers("https://a.example")  # the KeyRefresher call of gateway.client_auth
    key_set = validator.key_set("https://a.example")
    assert key_set is not None and key_set.kids == {"k1"}
    assert await refreshers.refresh("https://b.example") is False  # no JWKS: nothing to do
    async with trio.open_nursery() as nursery:
        await nursery.start(refreshers.run_periodic)
        nursery.cancel_scope.cancel()
