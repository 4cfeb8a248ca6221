/* Benchmark test server: a fake RDP session host, single-threaded, epoll.
 *
 * Each connection: read the client's Connection Request (one TPKT), answer the 19-byte
 * Connection Confirm, then read one mode byte and do what it says:
 *   'B' bulk: write to the client as fast as possible until it closes;
 *   'E' echo: send every byte back (ping-pong);
 *   'I' idle: read and discard, never write;
 *   'R' the session model (see common.h): a welcome, then every heartbeat answered with a
 *       heartbeat, every input with an update and, when asked for, a burst of MSS-sized data
 *       (scroll, video frames). Every answer names the backend (listening port) reached.
 * A client that closes right after the Confirm (connection-setup benchmark) is simply closed.
 *
 * Usage: rdpb_testserver [--listeners N] [--lifetime SECONDS] [--host ADDRESS]
 * Listens on N ports of 127.0.0.1 (or --host, an IPv4 address) chosen by the kernel and prints one JSON line
 * {"pid": ..., "ports": [...]} before serving. Exits on SIGTERM/SIGINT or after --lifetime.
 */
#include "common.h"

#include <arpa/inet.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#define MAX_LISTENERS 16
#define MAX_EVENTS 1024
#define DEFAULT_LIFETIME_S 3600.0 /* a safety net: a forgotten server never outlives an hour */

enum phase { P_FREE, P_LISTEN, P_CR, P_MODE, P_BULK, P_ECHO, P_IDLE, P_RDP };

#define RDP_MAX_QUEUED 4096 /* answers queued for one session; beyond it the session is dropped */
#define RDP_IOV 32

/* One answer waiting to be written: a header and `payload` filler bytes. */
struct item {
    struct rdp_smsg hdr;
    uint32_t payload;
};

/* A mode-'R' session: the input message being read, the answers not yet written. */
struct rsess {
    unsigned char in[RDP_CMSG_MAX];
    uint8_t in_got;
    uint8_t want_out; /* EPOLLOUT registered */
    uint32_t head, count, cap, off; /* q[head..count) queued; off: bytes of q[head] already sent */
    struct item *q;
};

struct conn {
    unsigned char phase;
    uint8_t backend;        /* index of the listening port (listener: its own; session: where it came in) */
    struct rsess *r;        /* mode 'R' only */
    uint16_t got;           /* bytes of the Connection Request seen so far */
    uint16_t need;          /* its TPKT length, once the header is in */
    unsigned char *pending; /* echo: bytes the client has not taken yet */
    uint32_t pending_len, pending_off;
};

static struct conn *conns;
static int max_fds;
static int epfd;
static unsigned char scratch[IO_CHUNK];
static unsigned char bulk_data[IO_CHUNK];
static volatile sig_atomic_t stopping;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void watch(int fd, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epfd, op, fd, &ev) != 0) die("epoll_ctl");
}

static void close_conn(int fd) {
    free(conns[fd].pending);
    if (conns[fd].r != NULL) free(conns[fd].r->q);
    free(conns[fd].r);
    memset(&conns[fd], 0, sizeof conns[fd]);
    close(fd); /* also removes it from the epoll set */
}

static struct in_addr listen_addr = {.s_addr = 0}; /* --host; 127.0.0.1 unless given */

static int open_listener(int index) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr = listen_addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
    if (listen(fd, 4096) != 0) die("listen"); /* the kernel caps it at somaxconn */
    conns[fd].phase = P_LISTEN;
    conns[fd].backend = (uint8_t)index;
    watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    return fd;
}

static int port_of(int fd) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) die("getsockname");
    return ntohs(addr.sin_port);
}

static void accept_all(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return; /* EAGAIN, or EMFILE: the client sees the failure */
        if (fd >= max_fds) {
            close(fd);
            continue;
        }
        set_nodelay(fd);
        conns[fd].phase = P_CR;
        conns[fd].backend = conns[lfd].backend;
        watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
}

/* Echo `len` bytes back; keeps what the socket does not take and waits for EPOLLOUT. */
static int echo(int fd, const unsigned char *data, size_t len) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) return -1;
    size_t sent = n < 0 ? 0 : (size_t)n;
    if (sent == len) return 0;
    struct conn *c = &conns[fd];
    c->pending = malloc(len - sent);
    if (c->pending == NULL) return -1;
    memcpy(c->pending, data + sent, len - sent);
    c->pending_len = (uint32_t)(len - sent);
    c->pending_off = 0;
    watch(fd, EPOLLOUT, EPOLL_CTL_MOD); /* stop reading until the client catches up */
    return 0;
}

/* ---- mode 'R': the session model ---------------------------------------------------------- */

static int rdp_queue(int fd, uint8_t type, uint8_t kind, uint32_t len, uint64_t t0) {
    struct rsess *r = conns[fd].r;
    if (r->count == r->cap) {
        if (r->head > 0) {
            memmove(r->q, r->q + r->head, (r->count - r->head) * sizeof *r->q);
            r->count -= r->head;
            r->head = 0;
        } else {
            uint32_t cap = r->cap ? r->cap * 2 : 8;
            if (cap > RDP_MAX_QUEUED) return -1;
            struct item *q = realloc(r->q, cap * sizeof *q);
            if (q == NULL) return -1;
            r->q = q;
            r->cap = cap;
        }
    }
    r->q[r->count++] = (struct item){
        .hdr = {.type = type, .backend = conns[fd].backend, .kind = kind, .len = len, .t0 = t0}, .payload = len};
    return 0;
}

static void rdp_want_out(int fd, int want) {
    struct rsess *r = conns[fd].r;
    if (r->want_out == want) return;
    r->want_out = (uint8_t)want;
    watch(fd, want ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
}

/* Write queued answers until the socket is full or nothing is left. */
static int rdp_flush(int fd) {
    struct rsess *r = conns[fd].r;
    while (r->head < r->count) {
        struct iovec iov[RDP_IOV];
        int n = 0;
        size_t total = 0;
        uint32_t off = r->off;
        for (uint32_t i = r->head; i < r->count && n + 2 <= RDP_IOV; i++, off = 0) {
            struct item *it = &r->q[i];
            if (off < RDP_SMSG_HDR) {
                iov[n++] = (struct iovec){(unsigned char *)&it->hdr + off, RDP_SMSG_HDR - off};
                total += RDP_SMSG_HDR - off;
                off = RDP_SMSG_HDR;
            }
            size_t left = it->payload - (off - RDP_SMSG_HDR);
            if (left == 0) continue;
            size_t take = left > IO_CHUNK ? IO_CHUNK : left;
            iov[n++] = (struct iovec){bulk_data, take};
            total += take;
            if (take < left) break;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN) return -1;
            rdp_want_out(fd, 1);
            return 0;
        }
        for (size_t adv = (size_t)w; adv > 0;) {
            size_t rem = RDP_SMSG_HDR + r->q[r->head].payload - r->off;
            if (adv < rem) {
                r->off += (uint32_t)adv;
                break;
            }
            adv -= rem;
            r->head++;
            r->off = 0;
        }
        if ((size_t)w < total) {
            rdp_want_out(fd, 1);
            return 0;
        }
    }
    r->head = r->count = 0;
    rdp_want_out(fd, 0);
    return 0;
}

static int rdp_message(int fd, const unsigned char *msg) {
    struct rdp_cmsg m;
    memcpy(&m, msg, sizeof m);
    if (m.type == 'H') return m.len == RDP_CMSG_HDR ? rdp_queue(fd, 'H', m.kind, 4, m.t0) : -1;
    if (m.type != 'I' || m.reply > RDP_MAX_PAYLOAD || m.burst > RDP_MAX_PAYLOAD) return -1;
    if (m.reply > 0 && rdp_queue(fd, 'U', m.kind, m.reply, m.t0) != 0) return -1;
    if (m.burst > 0 && rdp_queue(fd, 'B', m.kind, m.burst, m.t0) != 0) return -1;
    return 0;
}

/* Client bytes in mode 'R': split into messages, queue the answers, write what fits. */
static int rdp_feed(int fd, const unsigned char *data, size_t len) {
    struct rsess *r = conns[fd].r;
    while (len > 0) {
        size_t need = r->in_got < 2 ? 2 : r->in[1];
        size_t take = need - r->in_got < len ? need - r->in_got : len;
        memcpy(r->in + r->in_got, data, take);
        r->in_got = (uint8_t)(r->in_got + take);
        data += take;
        len -= take;
        if (r->in_got < 2) continue;
        if (r->in[1] < RDP_CMSG_HDR || r->in[1] > RDP_CMSG_MAX) return -1;
        if (r->in_got == r->in[1]) {
            if (rdp_message(fd, r->in) != 0) return -1;
            r->in_got = 0;
        }
    }
    return rdp_flush(fd);
}

static int start_rdp(int fd) {
    conns[fd].r = calloc(1, sizeof *conns[fd].r);
    if (conns[fd].r == NULL) return -1;
    conns[fd].phase = P_RDP;
    return rdp_queue(fd, 'W', 0, 0, 0);
}

static int start_mode(int fd, unsigned char mode) {
    switch (mode) {
    case MODE_BULK:
        conns[fd].phase = P_BULK;
        watch(fd, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
        return 0;
    case MODE_ECHO: conns[fd].phase = P_ECHO; return 0;
    case MODE_IDLE: conns[fd].phase = P_IDLE; return 0;
    case MODE_RDP: return start_rdp(fd);
    default: return -1;
    }
}

/* Bytes after the Connection Confirm: the mode byte, then mode data. */
static int after_confirm(int fd, const unsigned char *data, size_t len) {
    struct conn *c = &conns[fd];
    if (len == 0) return 0;
    if (c->phase == P_MODE) {
        if (start_mode(fd, data[0]) != 0) return -1;
        data++;
        len--;
    }
    if (c->phase == P_ECHO && len > 0) return echo(fd, data, len);
    if (c->phase == P_RDP) return rdp_feed(fd, data, len); /* also writes the welcome */
    return 0;
}

/* Consume Connection Request bytes; answers the Confirm once the whole TPKT is in. */
static int feed_request(int fd, const unsigned char *data, size_t len) {
    struct conn *c = &conns[fd];
    size_t i = 0;
    for (; i < len && (c->need == 0 || c->got < c->need); i++, c->got++) {
        if (c->got == 0 && data[i] != 0x03) return -1; /* TPKT version 3 */
        if (c->got == 2) c->need = (uint16_t)(data[i] << 8);
        if (c->got == 3) {
            c->need |= data[i];
            if (c->need < 7 || c->need > MAX_CR_BYTES) return -1;
        }
    }
    if (c->need == 0 || c->got < c->need) return 0;
    if (send(fd, CONNECTION_CONFIRM, CC_LEN, MSG_NOSIGNAL) != CC_LEN) return -1; /* fresh socket: fits */
    c->phase = P_MODE;
    return after_confirm(fd, data + i, len - i);
}

static int on_readable(int fd) {
    ssize_t n = recv(fd, scratch, sizeof scratch, 0);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    switch (conns[fd].phase) {
    case P_CR: return feed_request(fd, scratch, (size_t)n);
    case P_MODE:
    case P_ECHO: return after_confirm(fd, scratch, (size_t)n);
    case P_RDP: return rdp_feed(fd, scratch, (size_t)n);
    default: return 0; /* bulk and idle: discard */
    }
}

static int on_writable(int fd) {
    struct conn *c = &conns[fd];
    if (c->phase == P_RDP) return rdp_flush(fd);
    if (c->phase == P_BULK) {
        /* (sendfile() from a memfd was measured 25% slower than this on loopback) */
        ssize_t n = send(fd, bulk_data, sizeof bulk_data, MSG_NOSIGNAL);
        return n < 0 && errno != EAGAIN ? -1 : 0;
    }
    ssize_t n = send(fd, c->pending + c->pending_off, c->pending_len - c->pending_off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->pending_off += (uint32_t)n;
    if (c->pending_off < c->pending_len) return 0;
    free(c->pending);
    c->pending = NULL;
    watch(fd, EPOLLIN, EPOLL_CTL_MOD);
    return 0;
}

static void on_event(const struct epoll_event *ev) {
    int fd = ev->data.fd;
    if (conns[fd].phase == P_LISTEN) {
        accept_all(fd);
        return;
    }
    int rc = 0;
    if (ev->events & (EPOLLERR | EPOLLHUP)) rc = -1;
    if (rc == 0 && (ev->events & EPOLLOUT)) rc = on_writable(fd);
    if (rc == 0 && (ev->events & EPOLLIN) && conns[fd].phase != P_FREE) rc = on_readable(fd);
    if (rc != 0) close_conn(fd);
}

static void print_ports(const int *fds, int count) {
    printf("{\"pid\": %d, \"ports\": [", (int)getpid());
    for (int i = 0; i < count; i++) printf("%s%d", i ? ", " : "", port_of(fds[i]));
    printf("]}\n");
    fflush(stdout);
}

static void parse_args(int argc, char **argv, int *listeners, double *lifetime_s) {
    listen_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--listeners") == 0) {
            *listeners = atoi(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--lifetime") == 0) {
            *lifetime_s = parse_double(argv[++i], "--lifetime");
        } else if (i + 1 < argc && strcmp(argv[i], "--host") == 0) {
            if (inet_pton(AF_INET, argv[++i], &listen_addr) != 1) {
                fprintf(stderr, "--host must be an IPv4 address\n");
                exit(2);
            }
        } else {
            fprintf(stderr, "usage: %s [--listeners N] [--lifetime SECONDS] [--host 127.0.0.1]\n", argv[0]);
            exit(2);
        }
    }
    if (*listeners < 1 || *listeners > MAX_LISTENERS) {
        fprintf(stderr, "--listeners must be 1..%d\n", MAX_LISTENERS);
        exit(2);
    }
}

int main(int argc, char **argv) {
    int listeners = 1;
    double lifetime_s = DEFAULT_LIFETIME_S;
    parse_args(argc, argv, &listeners, &lifetime_s);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    max_fds = raise_nofile();
    conns = calloc((size_t)max_fds, sizeof *conns);
    epfd = epoll_create1(0);
    if (conns == NULL || epfd < 0) die("setup");
    memset(bulk_data, 'x', sizeof bulk_data);

    int fds[MAX_LISTENERS];
    for (int i = 0; i < listeners; i++) fds[i] = open_listener(i);
    print_ports(fds, listeners);

    uint64_t end = now_ns() + (uint64_t)(lifetime_s * 1e9);
    struct epoll_event events[MAX_EVENTS];
    while (!stopping && now_ns() < end) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, 200);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) on_event(&events[i]);
    }
    return 0;
}
