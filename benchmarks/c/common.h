/* Helpers shared by the benchmark test server and load generator (header only). */
#ifndef RDPB_BENCH_COMMON_H
#define RDPB_BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The X.224 Connection Confirm every test server session answers with ([MS-RDPBCGR] 2.2.1.2):
 * TPKT (19 bytes), CC TPDU, RDP_NEG_RSP selecting PROTOCOL_SSL. */
static const unsigned char CONNECTION_CONFIRM[19] = {
    0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34,
    0x00, 0x02, 0x01, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00,
};
#define CC_LEN ((int)sizeof(CONNECTION_CONFIRM))

/* The byte a client sends after the Confirm to choose what the server does next. */
#define MODE_BULK 'B' /* server streams to the client as fast as it can */
#define MODE_ECHO 'E' /* server echoes every byte back */
#define MODE_IDLE 'I' /* server reads and discards, never writes */
#define MODE_RDP 'R'  /* the session model: framed inputs answered with updates and bursts (below) */

/* ---- the session model's wire format (mode 'R'; rdpb_sessions.c and rdpb_testserver.c) ----
 * Client -> server, one message = a 20-byte header, then padding up to `len` (20..100 bytes):
 *   type(1) len(1) kind(1) pad(1) reply(4) burst(4) t0(8)
 * type 'H' heartbeat (len 20): the server answers with a 20-byte heartbeat ('H', 4 payload bytes).
 * type 'I' input (len 40..100): the server answers with an update ('U') of `reply` payload bytes,
 *   then, if `burst` > 0, a bulk message ('B') of `burst` payload bytes (scroll bursts, video
 *   frames), both carrying the input's kind and t0 back.
 * Server -> client, every message = a 16-byte header, then `len` payload bytes:
 *   type(1) backend(1) kind(1) pad(1) len(4) t0(8)
 * `backend` is the index of the listening port the session reached (0..listeners-1), so the
 * client sees which backend server it landed on. Right after the mode byte the server sends a
 * welcome ('W', no payload). Integers are in host byte order (both ends run on this machine). */
#define RDP_CMSG_HDR 20
#define RDP_CMSG_MAX 100
#define RDP_SMSG_HDR 16
#define RDP_MAX_PAYLOAD (4u << 20) /* a bound on reply and burst sizes */

struct rdp_cmsg {
    uint8_t type, len, kind, pad;
    uint32_t reply, burst;
    uint64_t t0;
} __attribute__((packed));
_Static_assert(sizeof(struct rdp_cmsg) == RDP_CMSG_HDR, "client message header");

struct rdp_smsg {
    uint8_t type, backend, kind, pad;
    uint32_t len;
    uint64_t t0;
} __attribute__((packed));
_Static_assert(sizeof(struct rdp_smsg) == RDP_SMSG_HDR, "server message header");

#define MAX_CR_BYTES 1024 /* same bound as the balancer's MAX_CONNECTION_REQUEST_BYTES */
#define IO_CHUNK (256 * 1024) /* one read or write; large enough that syscalls are not the limit */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double cpu_seconds(long sec, long usec) { return (double)sec + (double)usec / 1e6; }

static inline void die(const char *what) {
    perror(what);
    exit(2);
}

/* Soft open-files limit up to the hard limit; returns the new soft limit. */
static inline int raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) die("getrlimit");
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit");
    return rl.rlim_cur > 1000000 ? 1000000 : (int)rl.rlim_cur;
}

static inline void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static inline double parse_double(const char *s, const char *name) {
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "invalid %s: %s\n", name, s);
        exit(2);
    }
    return v;
}

#endif
