"""pytest fixtures for ferry integration tests. See harness.py for the API."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import (  # noqa: E402
    Ferry, FerryError, RawUpstream, UpstreamServer, ferry_bin,
)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (still runs by default)")


@pytest.fixture
def ferry_bin_path():
    b = ferry_bin()
    if not os.path.exists(b):
        pytest.fail("ferry binary not found at %s (set FERRY_BIN)" % b)
    return b


class FerryFactory:
    def __init__(self):
        self.instances = []

    def __call__(self, upstream_url, *extra_args, workers=1, env=None, start=True,
                 check_exit=True, **kw):
        """Create (and by default start) a Ferry. At teardown every instance is
        stopped; exit code must be 0 (unless check_exit=False) and stderr must
        contain no sanitizer report."""
        f = Ferry(upstream_url, *extra_args, workers=workers, env=env, **kw)
        f._check_exit = check_exit
        self.instances.append(f)
        if start:
            f.start()
        return f

    def teardown(self):
        problems = []
        for f in self.instances:
            if f.proc is None or f.port is None:
                # never started, or failed to start (start() already raised)
                f.kill()
                continue
            try:
                rc = f.stop()
            except FerryError as e:
                problems.append(str(e))
                continue
            if f._check_exit and rc != 0:
                problems.append("ferry exited with %r (expected 0); argv=%r\nstderr:\n%s"
                                % (rc, f.argv(), f.stderr_text()[-4000:]))
            san = f.sanitizer_lines()
            if san:
                problems.append("sanitizer output from ferry:\n" + f.stderr_text()[-8000:])
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def ferry_factory():
    fac = FerryFactory()
    try:
        yield fac
    finally:
        fac.teardown()


@pytest.fixture
def upstream():
    u = UpstreamServer().start()
    try:
        yield u
    finally:
        u.stop()


@pytest.fixture
def raw_upstream():
    """RawUpstream without a handler: set .handler = fn(conn) before use."""
    u = RawUpstream().start()
    try:
        yield u
    finally:
        u.stop()


@pytest.fixture
def ferry(ferry_factory, upstream):
    """A started ferry (1 worker) in front of the `upstream` fixture."""
    return ferry_factory(upstream.url)
