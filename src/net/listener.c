/* SO_REUSEPORT listeners; see listener.h. */
#include <stddef.h>
#include "net/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

/* [::] serves IPv4 too, whatever net.ipv6.bindv6only says: ":PORT" means every interface. */
static void set_dual_stack(int fd, const struct fy_addr *addr)
{
    if (addr->ss.ss_family == AF_INET6 && fy_addr_is_any((const struct sockaddr *)&addr->ss)) {
        int off = 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    }
}

int fy_listener_check_free(const struct fy_addr *addr)
{
    /* SO_REUSEPORT would let a second ferry silently share a port that is already served: bind a
     * probe without it first so "address in use" is reported as it would be without reuseport. */
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    set_dual_stack(fd, addr);
    int rc = bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int fy_listener_open(struct fy_addr *addr)
{
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    /* Accepted sockets inherit TCP_NODELAY on Linux: one call here instead of one per client. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_dual_stack(fd, addr);
    if (bind(fd, (struct sockaddr *)&addr->ss, addr->len) < 0 || listen(fd, 4096) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    socklen_t len = sizeof(addr->ss);
    getsockname(fd, (struct sockaddr *)&addr->ss, &len);
    addr->len = len;
    return fd;
}
