/* The "C io_uring" baseline of BENCHMARKING.md: the bar for many connections.
 * One ring, one thread: a multishot accept, a multishot recv per connection
 * into a ring of provided buffers (NBUFS x BUF_SIZE, shared by all), and one
 * send in flight per connection (a second could overtake a short first). A
 * received buffer waits in its connection's FIFO until sent, then goes back
 * to the ring; when the ring runs dry a connection's recv ends (ENOBUFS) and
 * is re-armed once buffers come back: the ring is the cap (backpressure).
 * All completions of a wakeup are handled before one io_uring_submit_and_wait
 * (batched submits); SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them.
 * TCP_NODELAY, backlog 1024; binds 127.0.0.1:PORT (default 0), prints
 * "listening tcp ADDR"; SIGTERM exits 0. Built by the benchmark with
 * `cc -O2 ... -luring` (Debian: liburing-dev). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define NBUFS 256 /* a power of two */
#define BGID 1
#define ENTRIES 1024
enum { OP_ACCEPT, OP_RECV, OP_SEND };
#define UD(op, fd) (((unsigned long long)(op) << 32) | (unsigned)(fd))

/* A connection, indexed by fd: its FIFO of received buffers (linked through
 * next[]), the offset sent of the head, and what is in flight. */
struct conn { int head, tail; unsigned off; int recv, send, eof, dead, stalled; };

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static int next_of[NBUFS];
static unsigned len_of[NBUFS];
static struct conn *c;
static int avail; /* buffers in the ring */
static int *stalled, nstalled; /* connections whose recv ended for want of buffers */
static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static struct io_uring_sqe *sqe(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) { io_uring_submit(&ring); s = io_uring_get_sqe(&ring); }
    return s; /* after a submit the queue has room */
}

static void arm_accept(int lfd) {
    struct io_uring_sqe *s = sqe();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, UD(OP_ACCEPT, lfd));
}

static void give_back(int bid) {
    avail++;
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, bid,
                          io_uring_buf_ring_mask(NBUFS), 0);
    io_uring_buf_ring_advance(br, 1);
}

static void arm_recv(int fd) {
    struct io_uring_sqe *s = sqe();
    io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, UD(OP_RECV, fd));
    c[fd].recv = 1;
}

static void arm_send(int fd) {
    int b = c[fd].head;
    struct io_uring_sqe *s = sqe();
    io_uring_prep_send(s, fd, bufs + (size_t)b * BUF_SIZE + c[fd].off, len_of[b] - c[fd].off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, UD(OP_SEND, fd));
    c[fd].send = 1;
}

/* Closes fd once nothing is in flight: after the echo of a FIN, or an error. */
static void maybe_close(int fd) {
    struct conn *k = &c[fd];
    if (k->recv || k->send) return;
    if (!k->dead && !(k->eof && k->head < 0)) return;
    while (k->head >= 0) { int b = k->head; k->head = next_of[b]; give_back(b); }
    close(fd);
    memset(k, 0, sizeof *k);
    k->head = k->tail = -1;
}

static void fail(int fd) {
    c[fd].dead = 1;
    if (c[fd].recv) shutdown(fd, SHUT_RDWR); /* ends the multishot recv */
    maybe_close(fd);
}

int main(int argc, char **argv) {
    struct rlimit rl;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(argc > 1 ? (unsigned short)atoi(argv[1]) : 0) };
    socklen_t alen = sizeof a;
    struct sigaction sa = { .sa_handler = on_term }; /* no SA_RESTART: the wait sees EINTR */
    struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN };
    struct io_uring_buf_reg reg = { .ring_entries = NBUFS, .bgid = BGID };
    int one = 1, lfd, ret;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1;
    c = calloc(rl.rlim_cur, sizeof *c);
    stalled = calloc(rl.rlim_cur, sizeof *stalled);
    if (!c || !stalled) return 1;
    for (rlim_t i = 0; i < rl.rlim_cur; i++) c[i].head = c[i].tail = -1;
    if (io_uring_queue_init_params(ENTRIES, &ring, &p) < 0) { /* an older kernel */
        memset(&p, 0, sizeof p);
        if ((ret = io_uring_queue_init_params(ENTRIES, &ring, &p)) < 0) {
            fprintf(stderr, "uring_echo: io_uring_queue_init: %s\n", strerror(-ret));
            return 1;
        }
    }
    br = mmap(NULL, NBUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bufs = malloc((size_t)NBUFS * BUF_SIZE);
    if (br == MAP_FAILED || !bufs) { perror("uring_echo: buffers"); return 1; }
    io_uring_buf_ring_init(br);
    reg.ring_addr = (unsigned long)br;
    if ((ret = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
        fprintf(stderr, "uring_echo: provided-buffer ring: %s\n", strerror(-ret));
        return 1;
    }
    for (int b = 0; b < NBUFS; b++) give_back(b);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1024) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("uring_echo: setup");
        return 1;
    }
    printf("listening tcp 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    arm_accept(lfd);
    while (!stop) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "uring_echo: wait: %s\n", strerror(-ret));
            return 1;
        }
        io_uring_for_each_cqe(&ring, head, cqe) {
            int op = (int)(cqe->user_data >> 32), fd = (int)(cqe->user_data & 0xffffffffu);
            int res = cqe->res, more = cqe->flags & IORING_CQE_F_MORE;
            seen++;
            if (op == OP_ACCEPT) {
                if (res >= 0) {
                    if ((rlim_t)res >= rl.rlim_cur) close(res);
                    else {
                        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                        arm_recv(res);
                    }
                }
                if (!more) arm_accept(lfd); /* the kernel ended it (an error): again */
            } else if (op == OP_RECV) {
                struct conn *k = &c[fd];
                if (!more) k->recv = 0;
                if (res > 0) {
                    int b = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                    avail--;
                    if (k->dead) give_back(b);
                    else {
                        len_of[b] = (unsigned)res;
                        next_of[b] = -1;
                        if (k->tail >= 0) next_of[k->tail] = b; else k->head = b;
                        k->tail = b;
                        if (!k->send) { k->off = 0; arm_send(fd); }
                    }
                } else if (res == -ENOBUFS && !k->dead) {
                    if (!k->stalled) { k->stalled = 1; stalled[nstalled++] = fd; }
                } else if (res == 0) k->eof = 1;
                else if (res < 0) k->dead = 1;
                if (!more && (k->eof || k->dead)) {
                    if (k->dead && k->send) shutdown(fd, SHUT_RDWR);
                    maybe_close(fd);
                } else if (!more && !k->stalled) arm_recv(fd); /* ended for a reason of its own */
            } else { /* OP_SEND */
                struct conn *k = &c[fd];
                k->send = 0;
                if (res < 0 || k->dead) { fail(fd); }
                else {
                    k->off += (unsigned)res;
                    if (k->off >= len_of[k->head]) {
                        int b = k->head;
                        k->head = next_of[b];
                        if (k->head < 0) k->tail = -1;
                        k->off = 0;
                        give_back(b);
                    }
                    if (k->head >= 0) arm_send(fd);
                    else maybe_close(fd);
                }
            }
        }
        io_uring_cq_advance(&ring, seen);
        /* Buffers came back: receive again on the connections that ran dry. */
        while (avail > 0 && nstalled > 0) {
            int fd = stalled[--nstalled];
            if (!c[fd].stalled) continue; /* closed since */
            c[fd].stalled = 0;
            if (!c[fd].dead && !c[fd].eof && !c[fd].recv) arm_recv(fd);
        }
    }
    return 0;
}
