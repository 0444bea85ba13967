"""The hot path's allocation budget: a keep-alive request costs at most one heap allocation in
the steady state (buffers, sessions, header arrays and head strings are recycled per worker).

ferry runs with tests/alloc/alloc_count.c preloaded, which counts every malloc/calloc/realloc
and reports the running total on SIGUSR2.
"""

import os
import signal

import pytest

from harness import ResponseReader, connect, ferry_bin, wait_for

REQUESTS = 1000


def shim_path():
    return os.path.join(os.path.dirname(ferry_bin()), "tests", "liballoc_count.so")


def sanitizer_build():
    with open(ferry_bin(), "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data


@pytest.fixture
def counted_ferry(ferry_factory, upstream, tmp_path):
    if sanitizer_build():
        pytest.skip("sanitizer runtimes own malloc: the budget is checked in the plain build")
    if not os.path.exists(shim_path()):
        pytest.fail("allocation counter not built at %s" % shim_path())
    out = tmp_path / "allocs"
    f = ferry_factory(upstream.url, "--access-log", "stdout",
                      env={"LD_PRELOAD": shim_path(), "ALLOC_COUNT_FILE": str(out)})
    reports = []

    def total():
        before = len(reports)
        f.proc.send_signal(signal.SIGUSR2)

        def arrived():
            lines = out.read_text().split() if out.exists() else []
            if len(lines) > before:
                reports[:] = lines
                return True
            return False
        wait_for(arrived, 5, what="the allocation count report")
        return int(reports[-1])

    return f, total


def run_requests(port, n, target=b"/size/64"):
    s = connect(port)
    rd = ResponseReader(s)
    for i in range(n):
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nUser-Agent: budget\r\n\r\n")
        r = rd.read_final()
        assert r.status == 200
    s.close()


def test_keepalive_request_allocates_at_most_once(counted_ferry):
    f, total = counted_ferry
    run_requests(f.port, 200)  # warm up: free lists, the pooled upstream connection, log buffer
    a = total()
    run_requests(f.port, REQUESTS)
    b = total()
    per_request = (b - a) / REQUESTS
    print("allocations per keep-alive request: %.3f" % per_request)
    assert per_request <= 1.0, "%.2f allocations per keep-alive request (budget: 1)" % per_request
