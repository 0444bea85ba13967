"""What the bench scripts share: starting a ferry (or any command that runs one) and reading
the port of its first listener from its "listening on" log line."""

import re
import subprocess

LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def start_ferry(argv):
    """Starts argv with stderr piped; returns (process, port), or (process, None) when it exited
    before listening. The caller stops the process."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = LISTEN_RE.search(line)
        if m:
            return p, int(m.group(1))
    return p, None
