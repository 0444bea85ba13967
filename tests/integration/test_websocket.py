"""Upgrade: websocket tunnels bytes both ways after the upstream's 101."""

import asyncio
import threading

import pytest

from harness import ResponseReader, SockReader, connect, wait_closed

websockets = pytest.importorskip("websockets")


class WsEchoServer:
    """websockets echo server running in its own event loop thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = None
        self.request_headers = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _echo(self, ws, path=None):
        self.request_headers.append(list(ws.request_headers.raw_items()))
        async for msg in ws:
            await ws.send(msg)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await websockets.serve(self._echo, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def start(self):
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()

        fut = asyncio.run_coroutine_threadsafe(close(), self.loop)
        try:
            fut.result(5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def ws_upstream():
    s = WsEchoServer().start()
    yield s
    s.stop()


def test_websocket_echo_through_ferry(ferry_factory, ws_upstream):
    f = ferry_factory("http://127.0.0.1:%d" % ws_upstream.port)

    async def client():
        async with websockets.connect("ws://%s/ws" % f.addr, open_timeout=5,
                                      close_timeout=5) as ws:
            out = []
            for msg in ["hello", "x" * 70000, b"\x00\x01binary\xff"]:
                await ws.send(msg)
                out.append(await asyncio.wait_for(ws.recv(), 5))
            return out

    got = asyncio.run(asyncio.wait_for(client(), 20))
    assert got == ["hello", "x" * 70000, b"\x00\x01binary\xff"]
    hdrs = {k.lower(): v for k, v in ws_upstream.request_headers[0]}
    assert hdrs.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in hdrs.get("connection", "").lower()


def test_raw_upgrade_tunnel(ferry_factory, raw_upstream):
    seen = {}

    def handler(c):
        rd = SockReader(c)
        head = rd.read_head()
        seen["head"] = head
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: dummy\r\n\r\n")
        # echo raw bytes until the peer closes
        if rd.buf:
            c.sendall(bytes(rd.buf).upper())
            rd.buf.clear()
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d.upper())

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=10)
    try:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        rd = ResponseReader(s, timeout=10)
        r = rd.read_response()
        assert r.status == 101, r.raw
        assert (r.header("Upgrade") or "").lower() == "websocket"
        assert "upgrade" in (r.header("Connection") or "").lower()
        assert r.header("Sec-WebSocket-Accept") == "dummy"
        got = bytearray(rd.buf)
        rd.buf.clear()
        for msg in [b"abc", b"not http at all\r\n\r\n", b"z" * 100000]:
            s.sendall(msg)
            want = len(got) + len(msg)
            while len(got) < want:
                d = s.recv(65536)
                assert d, "tunnel closed early"
                got += d
            assert bytes(got[-len(msg):]) == msg.upper()
        # client half-closes -> upstream sees EOF, closes -> client sees EOF
        s.shutdown(1)
        assert wait_closed(s, timeout=5) == b""
    finally:
        s.close()
    head = seen["head"].lower()
    assert b"upgrade: websocket" in head
    assert b"connection:" in head and b"upgrade" in head.split(b"connection:")[1].split(b"\r\n")[0]


def test_upgrade_refused_by_upstream_connection_continues_as_http(ferry_factory, raw_upstream):
    """RFC 9110 7.8: a server that does not upgrade answers normally and the
    connection continues; a proxy may close instead but must say Connection: close."""
    def handler(c):
        rd = SockReader(c)
        while True:
            try:
                m, t, h, b = rd.read_request()
            except (EOFError, OSError):
                return
            if t == "/chat":
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    raw_upstream.handler = handler
    f = ferry_factory(raw_upstream.url)
    s = connect(f.port, timeout=10)
    try:
        rd = ResponseReader(s, timeout=10)
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = rd.read_final()
        assert r.status == 400 and r.body == b"bad"
        if "close" in (r.header("Connection") or "").lower():
            return  # ferry chose to close and said so: acceptable
        s.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        r2 = rd.read_final()
        assert r2.status == 200 and r2.body == b"ok", "connection must continue as HTTP"
    finally:
        s.close()
