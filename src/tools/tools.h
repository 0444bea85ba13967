/*
 * ferry's offline subcommands, dispatched from main() before the proxy's own command line is
 * parsed: each takes argv with argv[0] being its own name, prints to stdout/stderr and returns
 * the process exit status. They run on the main thread and may block.
 */
#ifndef FY_TOOLS_H
#define FY_TOOLS_H

/* `ferry har FILE [-o OUT]`: a capture file (docs/capture.md) as HAR 1.2. */
int fy_cmd_har(int argc, char **argv);

/* `ferry replay FILE [--to URL] [--filter EXPR] [--upstream-ca FILE] [--insecure-skip-verify]
 * [--timeout 10s]`: sends the captured requests again and compares the answers. */
int fy_cmd_replay(int argc, char **argv);

#endif
