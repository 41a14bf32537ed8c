/* The "C epoll" baseline of BENCHMARKING.md: the least a one-core event loop
 * has to do to echo, so a netecho model can be compared with it in the same
 * run. Single-threaded, level-triggered, one shared 64 KiB read buffer; only a
 * write the socket could not take whole is copied, into that connection's own
 * pending buffer, and the connection is not read again until it is flushed
 * (backpressure, as in netecho's contract). TCP_NODELAY and backlog 1024 as
 * netecho. Binds 127.0.0.1:PORT (default 0) and prints the same
 * "listening tcp ADDR" line as netecho; SIGTERM exits 0.
 * Built by benches/models.rs with `cc -O2`. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
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

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 256

/* What a partial write left to send; indexed by fd. */
struct pending { char *data; size_t off, len; };

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void drop_conn(int ep, struct pending *p, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    free(p[fd].data);
    memset(&p[fd], 0, sizeof p[fd]);
    close(fd);
}

/* Sends p[fd]'s remainder; 0 when all is sent, 1 when some is left, -1 on error. */
static int flush(struct pending *p, int fd) {
    while (p[fd].off < p[fd].len) {
        ssize_t n = send(fd, p[fd].data + p[fd].off, p[fd].len - p[fd].off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno == EAGAIN ? 1 : -1;
        p[fd].off += (size_t)n;
    }
    free(p[fd].data);
    memset(&p[fd], 0, sizeof p[fd]);
    return 0;
}

int main(int argc, char **argv) {
    static char buf[BUF_SIZE];
    struct rlimit rl;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(argc > 1 ? (unsigned short)atoi(argv[1]) : 0) };
    socklen_t alen = sizeof a;
    struct sigaction sa = { .sa_handler = on_term }; /* no SA_RESTART: epoll_wait sees EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1;
    struct pending *p = calloc(rl.rlim_cur, sizeof *p);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int ep = epoll_create1(EPOLL_CLOEXEC), one = 1;
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, evs[MAX_EVENTS];
    if (!p || lfd < 0 || ep < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(lfd, 1024) != 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
        perror("epoll_echo: setup");
        return 1;
    }
    printf("listening tcp 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    while (!stop) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) { /* accept until EAGAIN; EMFILE and the like wait for the next event */
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct epoll_event cev = { .events = EPOLLIN, .data.fd = c };
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if ((rlim_t)c >= rl.rlim_cur || epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) != 0) close(c);
                }
                continue;
            }
            if (p[fd].data) { /* EPOLLOUT: finish the partial write, then read again */
                int r = flush(p, fd);
                struct epoll_event cev = { .events = EPOLLIN, .data.fd = fd };
                if (r < 0) drop_conn(ep, p, fd);
                else if (r == 0) epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                continue;
            }
            ssize_t got = recv(fd, buf, sizeof buf, 0);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) { drop_conn(ep, p, fd); continue; } /* FIN (nothing pending) or reset */
            ssize_t put = send(fd, buf, (size_t)got, MSG_NOSIGNAL);
            if (put < 0 && errno != EAGAIN && errno != EINTR) { drop_conn(ep, p, fd); continue; }
            if (put < got) { /* keep the rest for this connection; stop reading it */
                size_t done = put < 0 ? 0 : (size_t)put;
                struct epoll_event cev = { .events = EPOLLOUT, .data.fd = fd };
                p[fd].data = malloc((size_t)got - done);
                if (!p[fd].data) { drop_conn(ep, p, fd); continue; }
                memcpy(p[fd].data, buf + done, (size_t)got - done);
                p[fd].len = (size_t)got - done;
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
            }
        }
    }
    return 0;
}
