"""The served process against hostile connections: idle sockets, slow headers, too many
sockets at once, malformed headers."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.procs import ReceiverProcess, http, wait_for

pytestmark = pytest.mark.slow

StartReceiver = Callable[..., ReceiverProcess]


@contextlib.contextmanager
def _sockets(rx: ReceiverProcess, n: int) -> Iterator[list[socket.socket]]:
    opened = [socket.create_connection(("127.0.0.1", rx.port), timeout=10) for _ in range(n)]
    try:
        yield opened
    finally:
        for s in opened:
            s.close()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (end of stream) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_an_idle_connection_and_slow_headers_are_closed_after_the_timeout(
    receiver_proc: StartReceiver,
) -> None:
    """A socket that sends nothing, and one that sends its headers a byte at a time, are both
    closed once server.idle_timeout_seconds have passed, not held open for ever."""
    rx = receiver_proc(server={"idle_timeout_seconds": 1.0})
    with _sockets(rx, 2) as (idle, slow):
        started = time.monotonic()
        request = b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nX-Slow: "
        closed = False
        for byte in request:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if _closed_within(slow, 0.1):
                closed = True
                break
        assert closed, "slow headers kept the connection open"
        assert time.monotonic() - started < 10
        assert _closed_within(idle, 10)


def test_connections_past_the_limit_are_closed_at_once_and_counted(
    receiver_proc: StartReceiver,
) -> None:
    """With server.max_connections open, the next connection is closed as soon as it is
    accepted; once some close, the service answers again."""
    rx = receiver_proc(server={"max_connections": 8, "idle_timeout_seconds": 60})
    with _sockets(rx, 8):
        wait_for(lambda: _refused_now(rx), what="a connection past the limit closed at once")
    wait_for(lambda: http("GET", rx.url + "/healthz", timeout=2).status == 200, what="healthz")
    metrics = http("GET", rx.url + "/metrics", timeout=2).body.decode()
    refused = [
        line
        for line in metrics.splitlines()
        if line.startswith("posthog_receiver_connections_refused_total ")
    ]
    assert refused
    assert float(refused[0].split()[1]) >= 1


def _refused_now(rx: ReceiverProcess) -> bool:
    with socket.create_connection(("127.0.0.1", rx.port), timeout=5) as extra:
        return _closed_within(extra, 2)


def test_a_malformed_header_is_a_400_without_an_error_traceback(
    receiver_proc: StartReceiver,
) -> None:
    """A header the parser refuses is answered 400 and logged as one warning line."""
    rx = receiver_proc()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", rx.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.")
        assert b" 400 " in answer.split(b"\r\n")[0]
    assert rx.terminate() == 0
    text = rx.logs()
    assert "Traceback" not in text
    events = rx.log_events()
    assert not [e for e in events if e.get("level") == "error"]
    refused = [e for e in events if "malformed HTTP request refused" in e["event"]]
    assert len(refused) == 3
    assert all(e["level"] == "warning" for e in refused)
