/*
 * loadgen: the smallest honest epoll load generator for an echo server, the
 * bar `netecho bench` is measured against (scripts/bench-vs-c.sh).
 *
 * Closed loop, one thread, level-triggered epoll: CONNS connections each
 * write SIZE bytes, read until SIZE bytes are back, and repeat, for SECONDS.
 * It checks nothing and times nothing, so its cost per request is only the
 * syscalls: one write, one read, and a share of one epoll_wait.
 *
 * usage: loadgen IPV4 PORT CONNS SIZE SECONDS
 * prints: requests N
 *         cpu_s X        (user + system seconds of this process)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_EVENTS = 1024, BUF_SIZE = 65536 };

struct conn {
	int fd;
	size_t sent; /* bytes of the current message written */
	size_t got;  /* bytes of the current message read back */
	int out;     /* EPOLLOUT is asked for: the socket was full */
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* Writes what is left of the message; asks for EPOLLOUT if the socket is full. */
static void send_rest(int ep, struct conn *c, const char *msg, size_t size)
{
	while (c->sent < size) {
		ssize_t n = write(c->fd, msg + c->sent, size - c->sent);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				if (!c->out) {
					struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
					c->out = 1;
				}
				return;
			}
			die("write");
		}
		c->sent += (size_t)n;
	}
	if (c->out) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->out = 0;
	}
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s IPV4 PORT CONNS SIZE SECONDS\n", argv[0]);
		return 2;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
		fprintf(stderr, "loadgen: bad IPv4 address %s\n", argv[1]);
		return 2;
	}
	int conns = atoi(argv[3]);
	size_t size = (size_t)atol(argv[4]);
	double secs = atof(argv[5]);
	if (conns < 1 || size < 1 || secs <= 0) {
		fprintf(stderr, "loadgen: CONNS, SIZE and SECONDS must be positive\n");
		return 2;
	}
	char *msg = malloc(size);
	static char buf[BUF_SIZE];
	struct conn *cs = calloc((size_t)conns, sizeof *cs);
	if (!msg || !cs)
		die("malloc");
	memset(msg, 'x', size);

	int ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1");
	for (int i = 0; i < conns; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
			die("connect");
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		/* Non-blocking after the connect, as netecho bench does. */
		int fl = 1;
		if (ioctl(fd, FIONBIO, &fl) < 0)
			die("ioctl");
		cs[i].fd = fd;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			die("epoll_ctl");
	}

	unsigned long long requests = 0;
	double end = now() + secs;
	for (int i = 0; i < conns; i++)
		send_rest(ep, &cs[i], msg, size);
	struct epoll_event evs[MAX_EVENTS];
	while (now() < end) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, 100);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int k = 0; k < n; k++) {
			struct conn *c = evs[k].data.ptr;
			if (evs[k].events & EPOLLOUT)
				send_rest(ep, c, msg, size);
			if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				continue;
			ssize_t r = read(c->fd, buf, sizeof buf);
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				die("read");
			}
			if (r == 0) {
				fprintf(stderr, "loadgen: server closed a connection\n");
				return 1;
			}
			c->got += (size_t)r;
			if (c->got >= size) {
				requests++;
				c->got = 0;
				c->sent = 0;
				send_rest(ep, c, msg, size);
			}
		}
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
		     ru.ru_stime.tv_usec / 1e6;
	printf("requests %llu\ncpu_s %.3f\n", requests, cpu);
	return 0;
}
