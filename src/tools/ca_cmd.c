/*
 * `ferry ca` (ca_cmd.h). A thin front on fy_tls_intercept_new(): the same loading, checks and
 * generation as a proxy that intercepts, so what it prints is the CA that proxy will sign with.
 */
#include <stdio.h>
#include <string.h>

#include "net/tls.h"
#include "tools/ca_cmd.h"

static const char usage[] =
    "usage: ferry ca [--state-dir DIR] [--ca-cert FILE --ca-key FILE]\n"
    "\n"
    "Makes sure the CA that signs intercepted HTTPS exists, then prints where its certificate\n"
    "is and how to trust it. Without --ca-cert/--ca-key it is ferry's own, generated on first use\n"
    "in the state directory (default: $XDG_STATE_HOME/ferry, /var/lib/ferry for root, else\n"
    "$HOME/.local/state/ferry) as " FY_TLS_CA_CERT_FILE " and " FY_TLS_CA_KEY_FILE
    " (mode 0600).\n";

/* "--name VALUE" or "--name=VALUE" at argv[*i]; NULL when argv[*i] is not this option. */
static const char *option(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n))
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static void print_trust(const char *path)
{
    printf("CA certificate: %s\n"
           "\n"
           "ferry signs the certificates of intercepted HTTPS sites with this CA. Clients must\n"
           "trust it (and only on machines you control: whoever holds its key can impersonate\n"
           "any site to them):\n"
           "\n"
           "  curl:             curl --cacert %s https://example.com/\n"
           "  Python requests:  REQUESTS_CA_BUNDLE=%s python3 app.py\n"
           "                    (or requests.get(url, verify=\"%s\"))\n"
           "  Debian, Ubuntu:   sudo cp %s /usr/local/share/ca-certificates/ferry.crt &&\n"
           "                    sudo update-ca-certificates\n"
           "  Chromium, Firefox (NSS database; certutil is in libnss3-tools):\n"
           "                    certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n ferry -i %s\n",
           path, path, path, path, path, path);
}

int fy_cmd_ca(int argc, char **argv)
{
    struct fy_tls_intercept_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *v;
        int missing = 0;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if ((v = option(argc, argv, &i, "--state-dir", &missing))) {
            o.state_dir = v;
        } else if ((v = option(argc, argv, &i, "--ca-cert", &missing))) {
            o.ca_cert = v;
        } else if ((v = option(argc, argv, &i, "--ca-key", &missing))) {
            o.ca_key = v;
        } else {
            if (missing)
                fprintf(stderr, "ferry ca: %s needs a value\n", argv[i]);
            else
                fprintf(stderr, "ferry ca: unknown option '%s' (see ferry ca --help)\n", argv[i]);
            return 2;
        }
    }
    if (!o.ca_cert != !o.ca_key) {
        fprintf(stderr, "ferry ca: --ca-cert and --ca-key go together: give both or neither\n");
        return 2;
    }
    char err[512];
    if (fy_tls_init(err, sizeof(err)) < 0) {
        fprintf(stderr, "ferry ca: %s\n", err);
        return 1;
    }
    struct fy_tls_intercept *t = fy_tls_intercept_new(&o, err, sizeof(err));
    if (!t) {
        fprintf(stderr, "ferry ca: %s\n", err);
        fy_tls_shutdown();
        return 1;
    }
    print_trust(fy_tls_intercept_ca_path(t));
    fy_tls_intercept_unref(t);
    fy_tls_shutdown();
    return 0;
}
