"""Pipelined requests are answered in order."""

from harness import ResponseReader, connect, pattern_bytes, simple_request


def test_three_pipelined_requests_in_order(ferry, upstream):
    body = pattern_bytes(3000, seed=5)
    reqs = (simple_request("GET", "/size/11") +
            simple_request("POST", "/echo", body=body) +
            simple_request("GET", "/headers?third=1"))
    s = connect(ferry.port)
    try:
        s.sendall(reqs)
        rd = ResponseReader(s)
        r1, r2, r3 = rd.read_final(), rd.read_final(), rd.read_final()
    finally:
        s.close()
    assert r1.status == 200 and r1.body == pattern_bytes(11)
    assert r2.status == 200 and r2.body == body
    assert r3.status == 200 and r3.json()["path"] == "/headers?third=1"
    assert [q.path for q in upstream.wait_requests(3)] == ["/size/11", "/echo", "/headers?third=1"]
    assert ferry.stop() == 0
    ferry.assert_no_unexpected_errors()


def test_pipelined_order_kept_when_first_is_slow(ferry, upstream):
    s = connect(ferry.port, timeout=10)
    try:
        s.sendall(simple_request("GET", "/slow/0.5") + simple_request("GET", "/size/3") +
                  simple_request("GET", "/chunked/5"))
        rd = ResponseReader(s, timeout=10)
        r1, r2, r3 = rd.read_final(), rd.read_final(), rd.read_final()
    finally:
        s.close()
    assert r1.body == b"slow response done\n"
    assert r2.body == pattern_bytes(3)
    assert r3.body == pattern_bytes(5)


def test_pipelined_with_head_and_chunked_bodies(ferry, upstream):
    s = connect(ferry.port)
    try:
        s.sendall(simple_request("HEAD", "/size/100") +
                  simple_request("POST", "/echo-chunked", body=b"abc" * 50, chunked=True) +
                  simple_request("HEAD", "/chunked/100") +
                  simple_request("GET", "/status/204") +
                  simple_request("GET", "/size/7"))
        rd = ResponseReader(s)
        r1 = rd.read_final(head=True)
        r2 = rd.read_final()
        r3 = rd.read_final(head=True)
        r4 = rd.read_final()
        r5 = rd.read_final()
    finally:
        s.close()
    assert r1.status == 200 and r1.header("Content-Length") == "100"
    assert r2.body == b"abc" * 50
    assert r3.status == 200
    assert r4.status == 204
    assert r5.status == 200 and r5.body == pattern_bytes(7)


def test_many_pipelined_requests(ferry, upstream):
    n = 50
    s = connect(ferry.port, timeout=10)
    try:
        s.sendall(b"".join(simple_request("GET", "/size/%d" % i) for i in range(n)))
        rd = ResponseReader(s, timeout=10)
        for i in range(n):
            r = rd.read_final()
            assert r.status == 200 and r.body == pattern_bytes(i), "response %d out of order" % i
    finally:
        s.close()


def test_pipelined_requests_split_across_writes(ferry, upstream):
    data = simple_request("GET", "/size/1") + simple_request("GET", "/size/2") + \
        simple_request("GET", "/size/3")
    s = connect(ferry.port)
    try:
        # split in the middle of the second request line
        cut = len(simple_request("GET", "/size/1")) + 6
        s.sendall(data[:cut])
        rd = ResponseReader(s)
        r1 = rd.read_final()
        s.sendall(data[cut:])
        r2, r3 = rd.read_final(), rd.read_final()
    finally:
        s.close()
    assert [r1.body, r2.body, r3.body] == [pattern_bytes(1), pattern_bytes(2), pattern_bytes(3)]
