/* tunnel_load: the load client of bench/intercept.py (issue 8). It drives an intercepting
 * forward proxy the way a browser or curl does: CONNECT host:port, then TLS inside the tunnel,
 * verified against the proxy's CA with SNI and a host-name check, then HTTP/1.1 requests.
 *
 *   tunnel_load --proxy 127.0.0.1:3128 --ca PROXY_CA.pem --mode keepalive|newconn|mint
 *               --host origin.bench.test --port 8443 [--path /small] [--body-len 100]
 *               [--conns 10] [--warmup 2] [--duration 10] [--connect-ip]
 *
 * Modes:
 *   keepalive  each of --conns threads opens one tunnel and sends GET after GET on it (one at a
 *              time, the next when the previous response is read) until the end; a tunnel that
 *              fails is counted as an error and opened again.
 *   newconn    each request on a new connection: TCP connect, CONNECT, a full TLS handshake
 *              (no session resumption), one GET, close.
 *   mint       as newconn, but every connection names a host never asked for before,
 *              h<run><seq>.<suffix of --host>, so the proxy must make a new certificate for each
 *              (the origin's certificate is a wildcard that covers them all, and the bench's DNS
 *              server answers every such name).
 * --connect-ip sends CONNECT 127.0.0.1:PORT and puts the name in the SNI only (for a setup
 * where the proxy cannot resolve the names).
 *
 * Each response must be 200 with a Content-Length body of --body-len bytes (when given).
 * Counting: after --warmup seconds the client prints "measuring" on stdout, counts what
 * completes in the next --duration seconds, then prints one JSON line
 *   {"mode":..., "requests":N, "errors":E, "seconds":S, "rps":R, ...}
 * and exits without waiting for threads still inside a request. The orchestrator samples the
 * proxy's CPU time when it reads the two lines, so both cover the same window.
 *
 * Why C with threads and blocking sockets: the client shares CPU 0 with the origin and must not
 * be what limits the proxy. A Python asyncio client (what the first figures used) spends
 * more CPU per request than ferry does, so it would measure itself. Blocking I/O in one thread
 * per connection is the simplest correct client; with 10 connections the thread switches cost
 * nothing next to the TLS work.
 *
 * Build: cc -O2 -o tunnel_load bench/tunnel_load.c -lssl -lcrypto -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum mode { KEEPALIVE, NEWCONN, MINT };

static struct {
    struct sockaddr_in proxy;
    const char *ca, *host, *path, *suffix;
    int port, conns, connect_ip;
    long body_len; /* -1: any */
    double warmup, duration;
    enum mode mode;
} cfg = {.host = "origin.bench.test",
         .path = "/small",
         .conns = 10,
         .body_len = -1,
         .warmup = 2,
         .duration = 10,
         .mode = KEEPALIVE};

static SSL_CTX *ctx;
static unsigned run_id; /* random per run: mint names never repeat across runs either */
/* 0 warm-up, 1 measuring, 2 done. Only what completes in phase 1 is counted. */
static atomic_int phase;
static atomic_long n_requests, n_errors, n_errors_total;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[256];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *what)
{
    atomic_fetch_add(&n_errors_total, 1);
    if (atomic_load(&phase) != 1)
        return;
    atomic_fetch_add(&n_errors, 1);
    pthread_mutex_lock(&err_lock);
    if (!first_error[0]) {
        unsigned long e = ERR_peek_last_error();
        char ebuf[128] = "";
        if (e)
            ERR_error_string_n(e, ebuf, sizeof ebuf);
        snprintf(first_error, sizeof first_error, "%s%s%s (errno %d)", what, e ? ": " : "", ebuf,
                 errno);
    }
    pthread_mutex_unlock(&err_lock);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* TCP to the proxy and CONNECT; returns the socket (tunnel open) or -1. */
static int open_tunnel(const char *target)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket"), -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* a stuck proxy must not hang the client past the end of the run */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&cfg.proxy, sizeof cfg.proxy) < 0) {
        fail("connect to the proxy");
        close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", target,
                     cfg.port, target, cfg.port);
    if (send(fd, req, n, MSG_NOSIGNAL) != n) {
        fail("send CONNECT");
        close(fd);
        return -1;
    }
    /* Read the answer's head byte-exact: MSG_PEEK then consume up to its end, so no TLS byte
     * that might follow is swallowed (none should: the server speaks after the ClientHello). */
    char buf[2048];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, MSG_PEEK);
        if (r <= 0) {
            fail(r == 0 ? "proxy closed before answering CONNECT" : "recv CONNECT answer");
            close(fd);
            return -1;
        }
        buf[got + r] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        size_t take = end ? (size_t)(end + 4 - buf) - got : (size_t)r;
        if (recv(fd, buf + got, take, 0) != (ssize_t)take) {
            fail("recv CONNECT answer");
            close(fd);
            return -1;
        }
        got += take;
        buf[got] = 0;
        if (end)
            break;
        if (got >= sizeof buf - 1) {
            fail("CONNECT answer head too long");
            close(fd);
            return -1;
        }
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0 && strncmp(buf, "HTTP/1.0 200", 12) != 0) {
        char *eol = strstr(buf, "\r\n");
        if (eol)
            *eol = 0;
        char msg[160];
        snprintf(msg, sizeof msg, "CONNECT answered: %.120s", buf);
        fail(msg);
        close(fd);
        return -1;
    }
    return fd;
}

/* TLS inside the tunnel with SNI = name, verified against --ca for that name. */
static SSL *tls_connect(int fd, const char *name)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return fail("SSL_new"), NULL;
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        char msg[200];
        snprintf(msg, sizeof msg, "TLS handshake with the proxy for %.60s (verify: %.80s)", name,
                 X509_verify_cert_error_string(v));
        fail(msg);
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* One GET and its response on ssl; 0 when it was 200 with the expected body. */
static int exchange(SSL *ssl, const char *name, char *buf, size_t cap)
{
    /* Host names the port unless it is 443, as RFC 9110 7.2 asks (Squid takes a bumped
     * request's destination port from it) */
    char req[512], port[16] = "";
    if (cfg.port != 443)
        snprintf(port, sizeof port, ":%d", cfg.port);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s%s\r\nUser-Agent: tunnel_load\r\n\r\n", cfg.path,
                     name, port);
    if (SSL_write(ssl, req, n) != n)
        return fail("write request"), -1;
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got >= cap - 1)
            return fail("response head too long"), -1;
        int r = SSL_read(ssl, buf + got, (int)(cap - 1 - got));
        if (r <= 0)
            return fail("read response head"), -1;
        got += r;
        buf[got] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
        char *eol = strstr(buf, "\r\n");
        if (eol)
            *eol = 0;
        char msg[160];
        snprintf(msg, sizeof msg, "response: %.120s", buf);
        return fail(msg), -1;
    }
    long clen = -1;
    for (char *p = strstr(buf, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, "content-length:", 15) == 0)
            clen = strtol(p + 17, NULL, 10);
    if (clen < 0)
        return fail("response without Content-Length"), -1;
    if (cfg.body_len >= 0 && clen != cfg.body_len)
        return fail("unexpected body length"), -1;
    long have = (long)(got - (size_t)(end + 4 - buf));
    if (have > clen)
        return fail("bytes after the response body"), -1;
    while (have < clen) {
        int r = SSL_read(ssl, buf, (int)cap);
        if (r <= 0)
            return fail("read response body"), -1;
        have += r;
        if (have > clen)
            return fail("bytes after the response body"), -1;
    }
    return 0;
}

static void close_tls(SSL *ssl, int fd)
{
    if (ssl) {
        SSL_shutdown(ssl); /* sends close_notify, does not wait for the peer's */
        SSL_free(ssl);
    }
    close(fd);
}

static void *worker(void *arg)
{
    long id = (long)arg, seq = 0;
    char buf[65536];
    char name[256];
    while (atomic_load(&phase) != 2) {
        if (cfg.mode == MINT)
            snprintf(name, sizeof name, "h%08x%03lx%07lx.%s", run_id, id, seq++, cfg.suffix);
        else
            snprintf(name, sizeof name, "%s", cfg.host);
        int fd = open_tunnel(cfg.connect_ip ? "127.0.0.1" : name);
        if (fd < 0) {
            usleep(10000); /* a refusing proxy must not turn into a busy loop */
            continue;
        }
        SSL *ssl = tls_connect(fd, name);
        if (!ssl) {
            close(fd);
            usleep(10000);
            continue;
        }
        do {
            if (exchange(ssl, name, buf, sizeof buf) != 0)
                break;
            if (atomic_load(&phase) == 1)
                atomic_fetch_add(&n_requests, 1);
        } while (cfg.mode == KEEPALIVE && atomic_load(&phase) != 2);
        close_tls(ssl, fd);
    }
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: tunnel_load --proxy IP:PORT --ca FILE --mode keepalive|newconn|mint "
                    "--host NAME --port N [--path P] [--body-len N] [--conns N] [--warmup S] "
                    "[--duration S] [--connect-ip]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *proxy = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--connect-ip")) {
            cfg.connect_ip = 1;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--proxy"))
            proxy = v;
        else if (!strcmp(a, "--ca"))
            cfg.ca = v;
        else if (!strcmp(a, "--host"))
            cfg.host = v;
        else if (!strcmp(a, "--port"))
            cfg.port = atoi(v);
        else if (!strcmp(a, "--path"))
            cfg.path = v;
        else if (!strcmp(a, "--body-len"))
            cfg.body_len = atol(v);
        else if (!strcmp(a, "--conns"))
            cfg.conns = atoi(v);
        else if (!strcmp(a, "--warmup"))
            cfg.warmup = atof(v);
        else if (!strcmp(a, "--duration"))
            cfg.duration = atof(v);
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "keepalive"))
                cfg.mode = KEEPALIVE;
            else if (!strcmp(v, "newconn"))
                cfg.mode = NEWCONN;
            else if (!strcmp(v, "mint"))
                cfg.mode = MINT;
            else
                usage();
        } else
            usage();
    }
    if (!proxy || !cfg.ca || cfg.port <= 0 || cfg.conns <= 0)
        usage();
    char ip[64];
    int pport;
    if (sscanf(proxy, "%63[^:]:%d", ip, &pport) != 2 ||
        inet_pton(AF_INET, ip, &cfg.proxy.sin_addr) != 1)
        usage();
    cfg.proxy.sin_family = AF_INET;
    cfg.proxy.sin_port = htons(pport);
    /* mint names are h<...>.SUFFIX, SUFFIX = --host without its first label */
    const char *dot = strchr(cfg.host, '.');
    cfg.suffix = dot ? dot + 1 : cfg.host;

    signal(SIGPIPE, SIG_IGN);
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* no client session cache: every new connection is a full handshake, as a first visit is */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_load_verify_locations(ctx, cfg.ca, NULL) != 1) {
        fprintf(stderr, "tunnel_load: cannot load %s\n", cfg.ca);
        return 2;
    }
    unsigned char rnd[4];
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(rnd, 1, 4, ur) != 4)
        return 2;
    fclose(ur);
    run_id = (unsigned)rnd[0] << 24 | rnd[1] << 16 | rnd[2] << 8 | rnd[3];

    pthread_t *th = calloc(cfg.conns, sizeof *th);
    for (long i = 0; i < cfg.conns; i++) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&th[i], &at, worker, (void *)i) != 0) {
            fprintf(stderr, "tunnel_load: pthread_create failed\n");
            return 2;
        }
    }
    struct timespec w = {(time_t)cfg.warmup, (long)((cfg.warmup - (time_t)cfg.warmup) * 1e9)};
    nanosleep(&w, NULL);
    atomic_store(&phase, 1);
    double t0 = now();
    printf("measuring\n");
    fflush(stdout);
    struct timespec d = {(time_t)cfg.duration, (long)((cfg.duration - (time_t)cfg.duration) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&phase, 2);
    double secs = now() - t0;
    long reqs = atomic_load(&n_requests), errs = atomic_load(&n_errors);
    static const char *names[] = {"keepalive", "newconn", "mint"};
    printf("{\"mode\":\"%s\",\"conns\":%d,\"requests\":%ld,\"errors\":%ld,\"errors_total\":%ld,"
           "\"seconds\":%.4f,\"rps\":%.1f,\"first_error\":",
           names[cfg.mode], cfg.conns, reqs, errs, atomic_load(&n_errors_total), secs, reqs / secs);
    pthread_mutex_lock(&err_lock);
    json_str(stdout, first_error);
    pthread_mutex_unlock(&err_lock);
    printf("}\n");
    fflush(stdout);
    _exit(0); /* threads still inside a request are not waited for */
}
