/* The "C splice" baseline of BENCHMARKING.md: the C epoll server's loop, but
 * the bytes move socket -> pipe -> socket with splice(2) through a pipe per
 * connection and never enter user space. The pipe (the kernel's default 64
 * KiB) is the cap: a connection whose pipe is full is not read until some of
 * it is sent (backpressure). Level-triggered, TCP_NODELAY, backlog 1024;
 * binds 127.0.0.1:PORT (default 0), prints "listening tcp ADDR"; SIGTERM
 * exits 0. Built by benches/models.rs with `cc -O2`. */
#define _GNU_SOURCE /* accept4, pipe2, splice */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)

/* A connection's pipe and what it holds; indexed by the socket's fd. */
struct conn { int r, w; size_t held, cap; int fin, full; unsigned events; };

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void drop_conn(int ep, struct conn *c, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(c[fd].r);
    close(c[fd].w);
    memset(&c[fd], 0, sizeof c[fd]);
    close(fd);
}

/* Moves what it can in and out; -1: the connection is done. */
static int serve(struct conn *k, int fd) {
    if (!k->fin && !k->full && k->held < k->cap) {
        ssize_t n = splice(fd, NULL, k->w, NULL, k->cap - k->held, FLAGS);
        if (n > 0) k->held += (size_t)n;
        else if (n == 0) k->fin = 1;
        else if (errno == EAGAIN) k->full = k->held > 0; /* out of pipe slots, or empty */
        else if (errno != EINTR) return -1;
    }
    while (k->held > 0) {
        ssize_t n = splice(k->r, NULL, fd, NULL, k->held, FLAGS);
        if (n > 0) { k->held -= (size_t)n; k->full = 0; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        return -1;
    }
    if (k->fin && k->held == 0) { shutdown(fd, SHUT_WR); return -1; }
    return 0;
}

int main(int argc, char **argv) {
    struct rlimit rl;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(argc > 1 ? (unsigned short)atoi(argv[1]) : 0) };
    socklen_t alen = sizeof a;
    struct sigaction sa = { .sa_handler = on_term }; /* no SA_RESTART: epoll_wait sees EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* splice has no MSG_NOSIGNAL: EPIPE must not kill us */
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1;
    struct conn *c = calloc(rl.rlim_cur, sizeof *c);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int ep = epoll_create1(EPOLL_CLOEXEC), one = 1;
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, evs[MAX_EVENTS];
    if (!c || lfd < 0 || ep < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(lfd, 1024) != 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
        perror("splice_echo: setup");
        return 1;
    }
    printf("listening tcp 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    while (!stop) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd, p[2];
            if (fd == lfd) { /* accept until EAGAIN; EMFILE and the like wait for the next event */
                int s;
                while ((s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct epoll_event cev = { .events = EPOLLIN, .data.fd = s };
                    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if ((rlim_t)s >= rl.rlim_cur || pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) { close(s); continue; }
                    c[s] = (struct conn){ .r = p[0], .w = p[1], .events = EPOLLIN,
                                          .cap = (size_t)fcntl(p[0], F_GETPIPE_SZ) };
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &cev) != 0) drop_conn(ep, c, s);
                }
                continue;
            }
            if (serve(&c[fd], fd) < 0) { drop_conn(ep, c, fd); continue; }
            /* Read while the pipe has room, wait to write while it holds bytes. */
            unsigned want = (!c[fd].fin && !c[fd].full && c[fd].held < c[fd].cap ? EPOLLIN : 0) |
                            (c[fd].held > 0 ? EPOLLOUT : 0);
            if (want != c[fd].events) {
                struct epoll_event cev = { .events = want, .data.fd = fd };
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                c[fd].events = want;
            }
        }
    }
    return 0;
}
