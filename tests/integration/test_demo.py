"""scripts/run-demo.sh (`make run`): the banner appears only once ferry listens, a taken port is
reported clearly with a non-zero exit, and a stop signal ends ferry and the demo upstream."""

import fcntl
import os
import signal
import socket
import subprocess
import tempfile

from harness import REPO_ROOT, ResponseReader, connect, ferry_bin, free_port, simple_request
from harness import wait_for

DEMO = os.path.join(REPO_ROOT, "scripts", "run-demo.sh")
BANNER = "try: curl -i http://"


class Demo:
    def __init__(self, listen_port, upstream_port):
        self.out = tempfile.TemporaryFile()
        # O_APPEND: the script and ferry share this file's offset with the test, which seeks to 0
        # to read it; without it a write landing between that seek and the read would overwrite
        # the start of the output (the test saw its own "listening on" line vanish).
        fd = self.out.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        env = dict(os.environ, FERRY_BIN=ferry_bin(), DEMO_LISTEN="127.0.0.1:%d" % listen_port,
                   DEMO_UPSTREAM_PORT=str(upstream_port))
        # Its own session, so the test can signal the script like a terminal would.
        self.proc = subprocess.Popen(["bash", DEMO], stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def text(self):
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def wait(self, timeout=20):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError("demo did not exit; output:\n" + self.text())


def _accepting(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_demo_banner_only_once_ferry_listens_and_sigint_stops_it():
    lp, up = free_port(), free_port()
    d = Demo(lp, up)
    try:
        wait_for(lambda: BANNER in d.text(), 20, what=lambda: "the banner; output:\n" + d.text())
        # The banner follows ferry's own readiness line, and ferry answers at once.
        text = d.text()
        assert text.index("listening on 127.0.0.1:%d" % lp) < text.index(BANNER), text
        s = connect(lp)
        try:
            s.sendall(simple_request("GET", "/demo"))
            r = ResponseReader(s).read_final()
        finally:
            s.close()
        assert r.status == 200 and r.header("X-Proxied-By") == "ferry"
        assert b"X-Demo-Token: demo-secret-token" in r.body, r.body
        os.kill(d.proc.pid, signal.SIGINT)  # what Ctrl-C sends the script
        assert d.wait() == 0, d.text()
    finally:
        if d.proc.poll() is None:
            os.killpg(d.proc.pid, signal.SIGKILL)
    assert "stopped" in d.text()
    wait_for(lambda: not _accepting(lp) and not _accepting(up), 5,
             what="ferry and the demo upstream to be gone")


def test_demo_reports_a_taken_port_and_exits_nonzero():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    lp = taken.getsockname()[1]
    up = free_port()
    try:
        d = Demo(lp, up)
        rc = d.wait()
    finally:
        taken.close()
    text = d.text()
    assert rc != 0, text
    assert BANNER not in text, text
    assert "Address already in use" in text, text           # ferry's own message
    assert "127.0.0.1:%d is taken" % lp in text, text        # and the demo's hint
    wait_for(lambda: not _accepting(up), 5, what="the demo upstream to be gone")
