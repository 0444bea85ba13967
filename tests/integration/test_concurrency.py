"""1,000 concurrent clients are all served."""

import asyncio
import resource
import selectors
import socket
import threading
import time

import pytest

N_CLIENTS = 1000


class AsyncUpstream:
    """Small asyncio upstream: answers every request with 200 and the path as body.
    With hold_until=N it holds all responses until N requests are in (or timeout)."""

    def __init__(self, hold_until=0, hold_timeout=20.0):
        self.hold_until = hold_until
        self.hold_timeout = hold_timeout
        self.count = 0
        self.max_concurrent_conns = 0
        self.open_conns = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader, writer):
        self.open_conns += 1
        self.max_concurrent_conns = max(self.max_concurrent_conns, self.open_conns)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                path = head.split(b" ", 2)[1]
                self.count += 1
                if self.hold_until:
                    if self.count >= self.hold_until:
                        self.released.set()
                    try:
                        await asyncio.wait_for(self.released.wait(), self.hold_timeout)
                    except asyncio.TimeoutError:
                        self.released.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
                await writer.drain()
        finally:
            self.open_conns -= 1
            try:
                writer.close()
            except Exception:  # noqa
                pass

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.released = asyncio.Event()
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=2048)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def start(self):
        self.thread.start()
        assert self.ready.wait(5)
        self.url = "http://127.0.0.1:%d" % self.port
        return self

    def stop(self):
        async def _shutdown():
            self.server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(_shutdown(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _run_clients(port, n, timeout=60.0):
    """Selectors-based: connect n sockets, then send one request on each, then read
    all responses (Content-Length framed) concurrently. Returns {i: (status, body)}."""
    sel = selectors.DefaultSelector()
    socks = {}
    state = {}
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks[i] = s
        state[i] = {"out": b"GET /c%d HTTP/1.1\r\nHost: x\r\n\r\n" % i, "in": bytearray(),
                    "done": False}
        sel.register(s, selectors.EVENT_WRITE, i)
    results = {}
    deadline = time.monotonic() + timeout
    pending = n
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, ev in sel.select(min(left, 1.0)):
                i = key.data
                s = socks[i]
                st = state[i]
                if ev & selectors.EVENT_WRITE:
                    try:
                        k = s.send(st["out"])
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as e:
                        results[i] = ("error", str(e))
                        sel.unregister(s)
                        pending -= 1
                        continue
                    st["out"] = st["out"][k:]
                    if not st["out"]:
                        sel.modify(s, selectors.EVENT_READ, i)
                    continue
                try:
                    d = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    d = b""
                st["in"] += d
                buf = bytes(st["in"])
                done = False
                if b"\r\n\r\n" in buf:
                    head, _, body = buf.partition(b"\r\n\r\n")
                    cl = 0
                    for line in head.split(b"\r\n")[1:]:
                        k2, _, v = line.partition(b":")
                        if k2.strip().lower() == b"content-length":
                            cl = int(v)
                    if len(body) >= cl:
                        results[i] = (int(head.split(b" ")[1]), body[:cl])
                        done = True
                if not d and not done:
                    results[i] = ("eof", buf)
                    done = True
                if done:
                    sel.unregister(s)
                    pending -= 1
    finally:
        for s in socks.values():
            s.close()
        sel.close()
    return results


@pytest.mark.parametrize("workers", [1, 2])
def test_1000_concurrent_clients(ferry_factory, nofile, workers):
    up = AsyncUpstream(hold_until=N_CLIENTS).start()
    try:
        f = ferry_factory(up.url, workers=workers)
        res = _run_clients(f.port, N_CLIENTS)
    finally:
        up.stop()
    missing = [i for i in range(N_CLIENTS) if i not in res]
    bad = {i: v for i, v in res.items() if v != (200, b"/c%d" % i)}
    assert not missing, "%d clients got no response in time (e.g. %r)" % (len(missing), missing[:5])
    assert not bad, "%d clients got a wrong response, e.g. %r" % (len(bad), list(bad.items())[:3])
    assert up.count == N_CLIENTS
    # the upstream held every response until all 1000 requests had arrived, so ferry
    # really had 1000 exchanges in flight at once
    assert up.max_concurrent_conns >= N_CLIENTS * 0.9


def test_many_sequential_connections_no_fd_leak(ferry, upstream):
    """Many short-lived connections: ferry's fd count returns to baseline."""
    import os
    from harness import ResponseReader, connect, simple_request

    def nfds():
        return len(os.listdir("/proc/%d/fd" % ferry.pid))

    s = connect(ferry.port)
    s.sendall(simple_request("GET", "/warm"))
    ResponseReader(s).read_final()
    s.close()
    base = None
    for i in range(200):
        s = connect(ferry.port)
        try:
            s.sendall(simple_request("GET", "/n", headers=[("Connection", "close")]))
            ResponseReader(s).read_final()
        finally:
            s.close()
        if i == 10:
            base = nfds()
    from harness import wait_for
    wait_for(lambda: nfds() <= base + 2, 5, what="ferry fd count back near baseline (%d)" % base)
