/*
 * A TLS ClientHello sniffer: reads the first bytes a client sent into a CONNECT tunnel (peeked,
 * not consumed) and says whether they are TLS and which server name (SNI) they ask for. Plain
 * byte parsing with a bounds check before every read; no OpenSSL, no allocation, no state kept
 * between calls (call again with the longer buffer when more bytes came).
 */
#ifndef FY_TLS_SNIFF_H
#define FY_TLS_SNIFF_H

#include <stdbool.h>
#include <stddef.h>

/* The most bytes the sniffer ever needs: one full TLS record (16 KiB of payload + its 5-byte
 * header). A ClientHello split over several records must be complete within this many bytes;
 * one that is not is FY_SNIFF_BAD. A caller may peek this much and no more. */
#define FY_SNIFF_MAX (16384 + 5)

/* A host name's longest text form (253 bytes) plus its NUL: the sni_cap that always suffices. */
#define FY_SNIFF_SNI_CAP 254

enum fy_sniff {
    FY_SNIFF_NEED_MORE, /* a TLS handshake that is not complete yet: peek again with more */
    FY_SNIFF_NOT_TLS,   /* not a TLS handshake starting with a ClientHello (e.g. plain HTTP) */
    FY_SNIFF_TLS,       /* a complete, well-formed ClientHello: sni is filled */
    FY_SNIFF_BAD        /* TLS, but malformed: lengths that do not add up, a bad SNI, too big */
};

/*
 * Looks at buf[0..len) (the start of what the client sent). On FY_SNIFF_TLS, sni (sni_cap bytes,
 * may be NULL with sni_cap 0) receives the host_name from the server_name extension, lower-cased,
 * without a trailing dot, NUL-terminated, or "" when the client sent none. A name longer than
 * sni_cap - 1 is FY_SNIFF_BAD (FY_SNIFF_SNI_CAP never is too short). On any other result sni holds
 * "" (when sni_cap > 0). buf is only read, and only within len.
 */
enum fy_sniff fy_tls_sniff_client_hello(const void *buf, size_t len, char *sni, size_t sni_cap);

/*
 * The body of a server_name extension (RFC 6066: the ServerNameList with its 2-byte length), as
 * OpenSSL's client-hello callback hands it over. FY_SNIFF_TLS with sni filled as above, or
 * FY_SNIFF_BAD (malformed, more than one host_name, not a valid host name, longer than sni_cap).
 */
enum fy_sniff fy_tls_sniff_server_name_ext(const void *ext, size_t len, char *sni, size_t sni_cap);

/* Whether name[0..len) is a host name: at most 253 bytes of dot-separated labels of 1 to 63
 * letters, digits and hyphens, no label starting or ending with a hyphen. No trailing dot, no
 * wildcard, no IP literal check (a dotted quad is a valid host name). */
bool fy_tls_sniff_host_valid(const char *name, size_t len);

#endif
