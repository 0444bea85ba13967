/*
 * libFuzzer target: the ClientHello sniffer (net/tls_sniff.c), which reads the first bytes any
 * client sends into a CONNECT tunnel. Invariants checked, beyond the sanitizers': a name it
 * returns is a valid lower-case host name; the answer is monotonic in the bytes seen (once a
 * prefix decides, every longer buffer gives the same answer and name; NEED_MORE for the whole
 * means NEED_MORE for every prefix, and FY_SNIFF_MAX bytes always decide); the server_name
 * extension parser agrees with itself on the input taken as an extension body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/tls_sniff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(enum fy_sniff r, const char *sni)
{
    size_t n = strlen(sni);
    if (r != FY_SNIFF_TLS) {
        if (n)
            abort(); /* no name without a complete hello */
        return;
    }
    if (n && !fy_tls_sniff_host_valid(sni, n))
        abort();
    for (size_t i = 0; i < n; i++)
        if (sni[i] >= 'A' && sni[i] <= 'Z')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly `size` bytes, so ASan catches a read one past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    char sni[FY_SNIFF_SNI_CAP], shorter[FY_SNIFF_SNI_CAP];
    enum fy_sniff full = fy_tls_sniff_client_hello(buf, size, sni, sizeof(sni));
    check_name(full, sni);
    if (size > 0) {
        size_t cuts[] = {size - 1, size / 2};
        for (size_t i = 0; i < 2; i++) {
            enum fy_sniff r = fy_tls_sniff_client_hello(buf, cuts[i], shorter, sizeof(shorter));
            check_name(r, shorter);
            if (full == FY_SNIFF_NEED_MORE && r != FY_SNIFF_NEED_MORE)
                abort(); /* a prefix decided what the whole could not */
            if (r != FY_SNIFF_NEED_MORE && (r != full || strcmp(sni, shorter)))
                abort(); /* more bytes changed a decision */
        }
    }
    if (size >= FY_SNIFF_MAX && full == FY_SNIFF_NEED_MORE)
        abort(); /* FY_SNIFF_MAX bytes always decide */
    /* Without a buffer the same answer; a small one never overflows: the name fits or BAD. */
    if (fy_tls_sniff_client_hello(buf, size, NULL, 0) != full)
        abort();
    char small[4];
    enum fy_sniff r = fy_tls_sniff_client_hello(buf, size, small, sizeof(small));
    if (r == FY_SNIFF_TLS ? full != FY_SNIFF_TLS || strcmp(small, sni)
                          : r != full && !(full == FY_SNIFF_TLS && r == FY_SNIFF_BAD &&
                                           strlen(sni) >= sizeof(small)))
        abort();
    r = fy_tls_sniff_server_name_ext(buf, size, sni, sizeof(sni));
    if (r != FY_SNIFF_TLS && r != FY_SNIFF_BAD)
        abort();
    check_name(r == FY_SNIFF_TLS ? FY_SNIFF_TLS : FY_SNIFF_NOT_TLS, r == FY_SNIFF_TLS ? sni : "");
    if (r == FY_SNIFF_TLS && !sni[0])
        abort(); /* an extension always names a host */
    free(buf);
    return 0;
}
