"""pytest fixtures for ferry integration tests. See harness.py for the API.

Every ferry a test starts, however it starts it, has its stderr checked: error-level lines
("error ferry: ..."), sanitizer reports and assertion failures fail the test unless the test
declared them expected (f.expect_log(regex), or allowed_errors= when starting it). Warnings
are normal; f.assert_no_unexpected_errors() forbids them too.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402
from harness import FerryFactory, RawUpstream, UpstreamServer, ferry_bin  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (still runs by default)")


@pytest.fixture
def ferry_bin_path():
    b = ferry_bin()
    if not os.path.exists(b):
        pytest.fail("ferry binary not found at %s (set FERRY_BIN)" % b)
    return b


def _closing(fac):
    problems = fac.teardown()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def ferry_factory():
    """ferry_factory(upstream_url, *args, workers=1, env=None, start=True, check_exit=True,
    allowed_errors=(), log_level=, listen=) -> a started Ferry. At teardown every instance is
    stopped; the exit code must be 0 (unless check_exit=False) and stderr must hold no
    unexpected error line, sanitizer report or assertion failure."""
    fac = FerryFactory()
    try:
        yield fac
    finally:
        _closing(fac)


@pytest.fixture(scope="module")
def module_ferry_factory():
    """ferry_factory for ferries shared by a whole test module (same checks, at module end;
    their logs are also checked after each test)."""
    fac = FerryFactory()
    try:
        yield fac
    finally:
        _closing(fac)


@pytest.fixture(autouse=True)
def ferry_log_check():
    """After each test: the log lines every ferry wrote during the test (including ferries
    started without a factory, and ferries shared by the module) hold no unexpected error.
    Expectations declared during the test on a shared ferry end with the test."""
    shared = {f: len(f.expected_log) for f in harness.spawned_ferries()}
    yield
    problems = harness.check_ferry_logs()
    for f, n in shared.items():
        del f.expected_log[n:]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def upstream():
    """A started UpstreamServer; at teardown, ferry must not have sent it a malformed request."""
    u = UpstreamServer().start()
    try:
        yield u
    finally:
        u.stop()
    if u.bad:
        pytest.fail("ferry sent malformed requests upstream: %r" % u.bad, pytrace=False)


@pytest.fixture
def raw_upstream():
    """RawUpstream without a handler: set .handler = fn(conn) before use. At teardown, no
    handler may have failed an assertion (or seen a malformed request from ferry)."""
    u = RawUpstream().start()
    try:
        yield u
    finally:
        u.stop()
    errs = u.assertion_errors()
    if errs:
        pytest.fail("raw upstream handler failed: %s" % "; ".join(repr(e) for e in errs),
                    pytrace=False)


@pytest.fixture
def ferry(ferry_factory, upstream):
    """A started ferry (1 worker) in front of the `upstream` fixture."""
    return ferry_factory(upstream.url)
