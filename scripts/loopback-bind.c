/*
 * LD_PRELOAD library for the test cluster. A bind() or listen() that would use the
 * wildcard address (0.0.0.0 or ::) uses the loopback address instead. Daemons and job
 * steps without an option for their listen address then accept connections from this
 * machine only. Explicit addresses pass through unchanged.
 *
 * A dual-stack IPv6 socket (IPV6_V6ONLY off) is bound to ::ffff:127.0.0.1, which keeps
 * IPv4 loopback clients working but rejects clients that connect to ::1.
 * NOTE: an unbound UDP socket that sends first gets an implicit wildcard bind in the
 * kernel, which this library cannot see; only bind() and listen() are covered.
 *
 * Build: gcc -shared -fPIC -O2 -o libloopback-bind.so loopback-bind.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);
typedef int (*listen_function)(int, int);

static bind_function next_bind(void)
{
    static bind_function function;
    if (function == NULL) {
        function = (bind_function)dlsym(RTLD_NEXT, "bind");
    }
    return function;
}

static listen_function next_listen(void)
{
    static listen_function function;
    if (function == NULL) {
        function = (listen_function)dlsym(RTLD_NEXT, "listen");
    }
    return function;
}

static int ipv6_only(int fd)
{
    int value = 0;
    socklen_t length = sizeof value;
    if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &value, &length) != 0) {
        return 1;
    }
    return value;
}

/* Fill *loopback with the loopback form of addr; return 1 when addr is a wildcard address. */
static int loopback_for(int fd, const struct sockaddr *addr, socklen_t length,
                        struct sockaddr_storage *loopback)
{
    if (addr == NULL || length > sizeof *loopback) {
        return 0;
    }
    memcpy(loopback, addr, length);
    if (addr->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)loopback;
        if (in4->sin_addr.s_addr != htonl(INADDR_ANY)) {
            return 0;
        }
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return 1;
    }
    if (addr->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)loopback;
        if (!IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
            return 0;
        }
        if (ipv6_only(fd)) {
            in6->sin6_addr = in6addr_loopback;
        } else {
            /* ::ffff:127.0.0.1, the IPv4-mapped loopback address */
            memset(&in6->sin6_addr, 0, sizeof in6->sin6_addr);
            in6->sin6_addr.s6_addr[10] = 0xff;
            in6->sin6_addr.s6_addr[11] = 0xff;
            in6->sin6_addr.s6_addr[12] = 127;
            in6->sin6_addr.s6_addr[15] = 1;
        }
        return 1;
    }
    return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t length)
{
    struct sockaddr_storage loopback;
    bind_function real_bind = next_bind();
    if (real_bind == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (loopback_for(fd, addr, length, &loopback)) {
        return real_bind(fd, (const struct sockaddr *)&loopback, length);
    }
    return real_bind(fd, addr, length);
}

/* listen() on a TCP socket that was never bound makes the kernel bind it to the wildcard
 * address on a free port, so bind it to loopback port 0 first. */
static void bind_unbound_socket(int fd)
{
    struct sockaddr_storage current;
    socklen_t length = sizeof current;
    memset(&current, 0, sizeof current);
    if (getsockname(fd, (struct sockaddr *)&current, &length) != 0) {
        return;
    }
    if (current.ss_family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&current;
        if (in4->sin_port == 0 && in4->sin_addr.s_addr == htonl(INADDR_ANY)) {
            bind(fd, (struct sockaddr *)in4, sizeof *in4);
        }
    } else if (current.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&current;
        if (in6->sin6_port == 0 && IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
            bind(fd, (struct sockaddr *)in6, sizeof *in6);
        }
    }
}

int listen(int fd, int backlog)
{
    listen_function real_listen = next_listen();
    if (real_listen == NULL) {
        errno = ENOSYS;
        return -1;
    }
    bind_unbound_socket(fd);
    return real_listen(fd, backlog);
}
