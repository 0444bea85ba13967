"""A small DNS server for tests: answers A and AAAA queries over UDP on 127.0.0.1 from a dict
the test changes while it runs. The wire format (RFC 1035 4.1) is written by hand, so no
third-party module is needed.

    dns = DnsServer({"app.test": ["127.0.0.1"]}).start()
    dns.servers                      # "127.0.0.1:PORT", for resolvers:
    dns.set("app.test", ["127.0.0.1", "127.0.0.2", "::1"])
    dns.remove("app.test")           # NXDOMAIN from now on
    dns.silent = True                # receive queries, answer none (a dead resolver)
    dns.queries                      # [(name, qtype), ...] as received
    dns.stop()

A name in the dict with an empty list exists but has no address (NOERROR, no answer). Names
are matched case-insensitively, without the trailing dot. Run as a script to serve until
interrupted: python3 dns_server.py --port 5353 app.test=127.0.0.1,::1
"""

import argparse
import ipaddress
import select
import socket
import struct
import threading

QTYPE_A, QTYPE_AAAA = 1, 28
RCODE_NXDOMAIN, RCODE_FORMERR = 3, 1


def parse_query(data: bytes):
    """(id, flags, name, qtype, question bytes) of a query, or None when it is not one."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, p = [], 12
    while True:
        if p >= len(data):
            return None
        n = data[p]
        p += 1
        if n == 0:
            break
        if n > 63 or p + n > len(data):  # a query's name has no compression pointers
            return None
        labels.append(data[p:p + n].decode("ascii", "replace"))
        p += n
    if p + 4 > len(data):
        return None
    qtype, _qclass = struct.unpack("!HH", data[p:p + 4])
    return qid, flags, ".".join(labels).lower(), qtype, data[12:p + 4]


def build_answer(qid, flags, question, qtype, addrs, rcode=0) -> bytes:
    """The response: the question copied back, then one record per address of the asked
    family, each naming the question's name by a pointer (0xC00C) with TTL 0."""
    records = []
    for a in addrs or ():
        ip = ipaddress.ip_address(a)
        if (ip.version == 4 and qtype == QTYPE_A) or (ip.version == 6 and qtype == QTYPE_AAAA):
            rdata = ip.packed
            records.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(rdata)) + rdata)
    # QR, the opcode and RD copied from the query, RA
    rflags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", qid, rflags, 1, len(records), 0, 0)
    return header + question + b"".join(records)


class DnsServer:
    def __init__(self, records=None, port: int = 0):
        self._lock = threading.Lock()
        self._records = {k.lower().rstrip("."): list(v) for k, v in (records or {}).items()}
        self.silent = False
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.servers = "127.0.0.1:%d" % self.port
        self._stop = threading.Event()
        self._thread = None

    def set(self, name: str, addrs):
        with self._lock:
            self._records[name.lower().rstrip(".")] = list(addrs)

    def remove(self, name: str):
        with self._lock:
            self._records.pop(name.lower().rstrip("."), None)

    def answer(self, data: bytes):
        q = parse_query(data)
        if q is None:
            if len(data) >= 12:  # a header we can echo: FORMERR rather than silence
                qid, flags = struct.unpack("!HH", data[:4])
                return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x0100) | RCODE_FORMERR,
                                   0, 0, 0, 0)
            return None
        qid, flags, name, qtype, question = q
        with self._lock:
            self.queries.append((name, qtype))
            addrs = self._records.get(name)
        if self.silent:
            return None
        if addrs is None:
            return build_answer(qid, flags, question, qtype, [], RCODE_NXDOMAIN)
        return build_answer(qid, flags, question, qtype, addrs)

    def _serve(self):
        while not self._stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            out = self.answer(data)
            if out is not None:
                self.sock.sendto(out, peer)

    def start(self):
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=5353)
    ap.add_argument("records", nargs="*", help="NAME=ADDR[,ADDR...]")
    args = ap.parse_args()
    recs = {}
    for r in args.records:
        name, _, addrs = r.partition("=")
        recs[name] = [a for a in addrs.split(",") if a]
    dns = DnsServer(recs, args.port).start()
    print("dns server on %s" % dns.servers, flush=True)
    try:
        dns._thread.join()
    except KeyboardInterrupt:
        dns.stop()


if __name__ == "__main__":
    main()
