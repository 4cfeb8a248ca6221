/* Benchmark load generator: RDP-shaped clients, single-threaded, epoll.
 *
 * Every connection sends an X.224 Connection Request with its own user cookie
 * (Cookie: mstshash=<prefix><n>; with --users N, n cycles through 0..N-1: returning users)
 * and an RDP_NEG_REQ, waits for the 19-byte Connection Confirm,
 * then, by --mode:
 *   setup     close at once and open the next one; --conns connections in flight at a time.
 *             Measures connections per second and the setup time (connect() to Confirm).
 *   bulk      send 'B' and read what the server streams. Measures MB/s (10^6 bytes).
 *   pingpong  send 'E', then each connection sends --msg-size bytes and waits for them to come back,
 *             over and over. Measures round trips per second and the round-trip time.
 *   idle      send 'I' and hold the connection. Once all are up, prints {"event": "ready", ...},
 *             then waits until standard input is readable or closed (or --duration passes),
 *             counting connections that died meanwhile.
 * For bulk, pingpong and idle, all --conns connections are set up first (at most --burst
 * handshakes at a time), then the --duration measurement window starts.
 *
 * Every loop is bounded by count (--max-ops, --max-bytes) and by time (--duration, --timeout).
 * Prints one JSON object with the results on standard output; exit status 1 on --timeout.
 */
#include "common.h"

#include <arpa/inet.h>
#include <math.h>
#include <signal.h>
#include <sys/epoll.h>

#define MAX_EVENTS 1024
#define HIST_US 2000000 /* latency histogram: 1 us buckets up to 2 s, the rest in the last one */
#define MAX_MSG 4096
#define EPOLL_TICK_MS 5 /* how late a window may end; small against second-long windows */

enum mode { M_SETUP, M_BULK, M_PINGPONG, M_IDLE };
enum phase { PH_ESTABLISH, PH_MEASURE, PH_HOLD, PH_DONE };
enum state { S_FREE, S_CONNECTING, S_WAIT_CC, S_RELAY };

struct conn {
    unsigned char state;
    uint8_t cc_got;
    uint16_t msg_got;
    uint32_t id;
    uint64_t t0; /* when the connect or the current message started */
};

static struct {
    const char *host;
    int port;
    enum mode mode;
    int conns;
    double duration_s, timeout_s;
    uint64_t max_ops, max_bytes;
    int msg_size, burst;
    const char *prefix;
    uint32_t users; /* 0: every connection its own user; else user ids cycle through 0..users-1 */
} opt = {"127.0.0.1", 0, M_SETUP, 1, 1.0, 0, 100000000ull, 1ull << 40, 64, 128, "u", 0};

static struct {
    int launched, inflight, established, failed, live, died;
    uint64_t ops, bytes, lat_count, lat_sum_us, lat_max_us;
    char first_error[200];
    int errors;
} st;

static struct conn *conns;
static int max_fds, epfd;
static enum phase phase = PH_ESTABLISH;
static uint64_t t_start, t_measure, t_measure_end, t_done, t_end;
static uint32_t next_id;
static struct sockaddr_in target;
static unsigned char scratch[IO_CHUNK];
static unsigned char message[MAX_MSG];
static uint32_t hist[HIST_US];

static const char *MODE_NAMES[] = {"setup", "bulk", "pingpong", "idle"};

/* ---- bookkeeping -------------------------------------------------------------------------- */

static void note_error(const char *what, int err) {
    st.errors++;
    if (st.first_error[0] == '\0')
        snprintf(st.first_error, sizeof st.first_error, "%s: %s", what, err ? strerror(err) : "unexpected");
}

static void record_latency(uint64_t t0) {
    uint64_t us = (now_ns() - t0) / 1000;
    hist[us < HIST_US ? us : HIST_US - 1]++;
    st.lat_count++;
    st.lat_sum_us += us;
    if (us > st.lat_max_us) st.lat_max_us = us;
}

static uint64_t percentile_us(double p) {
    if (st.lat_count == 0) return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)st.lat_count), seen = 0;
    for (uint64_t us = 0; us < HIST_US; us++) {
        seen += hist[us];
        if (seen >= rank) return us;
    }
    return st.lat_max_us;
}

static void watch(int fd, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epfd, op, fd, &ev) != 0) die("epoll_ctl");
}

static int measuring(void) { return phase == PH_MEASURE; }

/* ---- connections -------------------------------------------------------------------------- */

/* TPKT + X.224 CR ([MS-RDPBCGR] 2.2.1.1) with a user cookie and an RDP_NEG_REQ (SSL|HYBRID). */
static int build_request(unsigned char *out, uint32_t id) {
    static const unsigned char neg_req[8] = {0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00};
    char cookie[128];
    int clen = snprintf(cookie, sizeof cookie, "Cookie: mstshash=%s%u\r\n", opt.prefix, id);
    int total = 4 + 7 + clen + 8;
    const unsigned char head[11] = {0x03, 0x00, (unsigned char)(total >> 8), (unsigned char)total,
                                    (unsigned char)(total - 5), 0xe0, 0, 0, 0, 0, 0};
    memcpy(out, head, sizeof head);
    memcpy(out + 11, cookie, (size_t)clen);
    memcpy(out + 11 + clen, neg_req, sizeof neg_req);
    return total;
}

/* Tiny writes into an empty socket buffer always go through whole; anything else is an error. */
static int send_all(int fd, const void *data, size_t len) {
    return send(fd, data, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

static void drop(int fd) {
    struct conn *c = &conns[fd];
    if (c->state == S_CONNECTING || c->state == S_WAIT_CC) {
        st.inflight--;
        st.failed++;
    } else if (c->state == S_RELAY) {
        st.live--;
    }
    c->state = S_FREE;
    close(fd);
}

static void fail(int fd, const char *what, int err) {
    note_error(what, err);
    drop(fd);
}

/* Sends the Connection Request: 1 when sent, 0 when the socket is not connected yet (EAGAIN),
 * -1 when the connection failed (and was dropped). */
static int send_request(int fd) {
    unsigned char cr[256];
    int len = build_request(cr, conns[fd].id);
    ssize_t n = send(fd, cr, (size_t)len, MSG_NOSIGNAL);
    if (n == len) {
        conns[fd].state = S_WAIT_CC;
        return 1;
    }
    if (n < 0 && errno == EAGAIN) return 0;
    fail(fd, "send request", n < 0 ? errno : 0);
    return -1;
}

static void launch(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    st.launched++;
    if (fd < 0 || fd >= max_fds) {
        note_error("socket", fd < 0 ? errno : EMFILE);
        st.failed++;
        if (fd >= 0) close(fd);
        return;
    }
    set_nodelay(fd);
    uint32_t id = opt.users ? next_id++ % opt.users : next_id++;
    conns[fd] = (struct conn){.state = S_CONNECTING, .id = id, .t0 = now_ns()};
    st.inflight++;
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0 && errno != EINPROGRESS) {
        fail(fd, "connect", errno);
        return;
    }
    /* On loopback the handshake has usually completed inside connect(): send at once and save
     * the EPOLLOUT round (less load-generator CPU per connection); else wait for EPOLLOUT. */
    int sent = send_request(fd);
    if (sent >= 0) watch(fd, sent ? EPOLLIN : EPOLLOUT, EPOLL_CTL_ADD);
}

static void send_message(int fd) {
    conns[fd].t0 = now_ns();
    conns[fd].msg_got = 0;
    if (send_all(fd, message, (size_t)opt.msg_size) != 0) fail(fd, "send message", errno);
}

static int may_start_more_setups(void) {
    return measuring() && st.ops + (uint64_t)st.inflight < opt.max_ops;
}

static void handshake_done(int fd) {
    static const unsigned char mode_byte[] = {0, MODE_BULK, MODE_ECHO, MODE_IDLE};
    st.inflight--;
    if (opt.mode == M_SETUP) {
        if (measuring()) {
            record_latency(conns[fd].t0);
            st.ops++;
        }
        conns[fd].state = S_FREE;
        close(fd);
        if (may_start_more_setups()) launch();
        return;
    }
    conns[fd].state = S_RELAY;
    st.established++;
    st.live++;
    if (send_all(fd, &mode_byte[opt.mode], 1) != 0) fail(fd, "send mode", errno);
}

/* ---- events ------------------------------------------------------------------------------- */

static void on_connected(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        fail(fd, "connect", err);
        return;
    }
    if (send_request(fd) > 0) watch(fd, EPOLLIN, EPOLL_CTL_MOD);
}

static void on_confirm_bytes(int fd) {
    struct conn *c = &conns[fd];
    ssize_t n = recv(fd, scratch, (size_t)(CC_LEN - c->cc_got), 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return;
        fail(fd, "closed before the Connection Confirm", n < 0 ? errno : 0);
        return;
    }
    if (memcmp(scratch, CONNECTION_CONFIRM + c->cc_got, (size_t)n) != 0) {
        fail(fd, "not the expected Connection Confirm", 0);
        return;
    }
    c->cc_got = (uint8_t)(c->cc_got + n);
    if (c->cc_got == CC_LEN) handshake_done(fd);
}

static void on_relay_bytes(int fd) {
    /* Bulk: MSG_TRUNC makes TCP drop the bytes without copying them to us (tcp(7)), so reading
     * costs this core little and the proxy's core sets the pace. */
    ssize_t n = recv(fd, scratch, sizeof scratch, opt.mode == M_BULK ? MSG_TRUNC : 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return;
        if (phase == PH_HOLD) st.died++;
        fail(fd, "connection closed by the peer", n < 0 ? errno : 0);
        return;
    }
    if (opt.mode == M_BULK && measuring()) st.bytes += (uint64_t)n;
    if (opt.mode != M_PINGPONG) return;
    struct conn *c = &conns[fd];
    c->msg_got = (uint16_t)(c->msg_got + n);
    if (c->msg_got < opt.msg_size || !measuring()) return;
    record_latency(c->t0);
    st.ops++;
    if (st.ops < opt.max_ops) send_message(fd);
}

static void on_event(const struct epoll_event *ev) {
    int fd = ev->data.fd;
    if (fd == STDIN_FILENO) {
        phase = PH_DONE; /* the runner has measured what it wanted */
        return;
    }
    switch (conns[fd].state) {
    case S_CONNECTING:
        if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(fd);
        break;
    case S_WAIT_CC: on_confirm_bytes(fd); break;
    case S_RELAY: on_relay_bytes(fd); break;
    default: break;
    }
}

/* ---- phases ------------------------------------------------------------------------------- */

static void start_measure(uint64_t now) {
    phase = PH_MEASURE;
    t_measure = now;
    t_measure_end = now + (uint64_t)(opt.duration_s * 1e9);
    if (opt.mode == M_PINGPONG) {
        for (int fd = 0; fd < max_fds; fd++)
            if (conns[fd].state == S_RELAY) send_message(fd);
    } else if (opt.mode == M_SETUP) {
        for (int i = 0; i < opt.conns && may_start_more_setups(); i++) launch();
    }
}

static void start_hold(uint64_t now) {
    phase = PH_HOLD;
    t_measure = now;
    t_measure_end = now + (uint64_t)(opt.duration_s * 1e9);
    printf("{\"event\": \"ready\", \"established\": %d, \"failed\": %d}\n", st.established, st.failed);
    fflush(stdout);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = STDIN_FILENO};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) != 0)
        phase = PH_DONE; /* /dev/null or a file (EPERM): nobody will release us, so we are done */
}

static int window_over(uint64_t now) {
    if (now >= t_measure_end) return 1;
    if (opt.mode == M_BULK) return st.bytes >= opt.max_bytes;
    if (opt.mode == M_SETUP) return st.ops >= opt.max_ops || (st.inflight == 0 && !may_start_more_setups());
    return st.ops >= opt.max_ops || (opt.mode == M_PINGPONG && st.live == 0);
}

static void tick(uint64_t now) {
    switch (phase) {
    case PH_ESTABLISH:
        while (st.launched < opt.conns && st.inflight < opt.burst) launch();
        if (st.established + st.failed >= opt.conns)
            opt.mode == M_IDLE ? start_hold(now) : start_measure(now);
        break;
    case PH_MEASURE:
        if (window_over(now)) {
            phase = PH_DONE;
            t_done = now; /* everything counted so far happened before now */
        }
        break;
    case PH_HOLD:
        if (now >= t_measure_end) phase = PH_DONE;
        break;
    case PH_DONE: break;
    }
}

static int run(void) {
    uint64_t deadline = t_start + (uint64_t)(opt.timeout_s * 1e9);
    struct epoll_event events[MAX_EVENTS];
    if (opt.mode == M_SETUP) start_measure(t_start);
    while (phase != PH_DONE) {
        uint64_t now = now_ns();
        if (now >= deadline) {
            note_error("timeout", ETIMEDOUT);
            return 1;
        }
        tick(now);
        int n = epoll_wait(epfd, events, MAX_EVENTS, EPOLL_TICK_MS);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) on_event(&events[i]);
    }
    return 0;
}

/* ---- output and arguments ----------------------------------------------------------------- */

static void print_results(int timed_out) {
    uint64_t window_end = t_done ? t_done : t_end;
    double window = t_measure ? (double)(window_end - t_measure) / 1e9 : 0.0;
    double wall = (double)(t_end - t_start) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"mode\": \"%s\", \"conns\": %d, \"established\": %d, \"failed\": %d, \"died\": %d, "
           "\"alive_at_end\": %d, \"errors\": %d, \"first_error\": \"%s\", \"timed_out\": %s, ",
           MODE_NAMES[opt.mode], opt.conns, st.established, st.failed, st.died, st.live, st.errors,
           st.first_error, timed_out ? "true" : "false");
    printf("\"window_s\": %.6f, \"wall_s\": %.6f, \"ops\": %llu, \"ops_per_s\": %.3f, \"bytes\": %llu, "
           "\"mb_per_s\": %.3f, ",
           window, wall, (unsigned long long)st.ops, window > 0 ? (double)st.ops / window : 0.0,
           (unsigned long long)st.bytes, window > 0 ? (double)st.bytes / window / 1e6 : 0.0);
    printf("\"lat_count\": %llu, \"lat_p50_us\": %llu, \"lat_p99_us\": %llu, \"lat_max_us\": %llu, "
           "\"lat_mean_us\": %.1f, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f}\n",
           (unsigned long long)st.lat_count, (unsigned long long)percentile_us(0.50),
           (unsigned long long)percentile_us(0.99), (unsigned long long)st.lat_max_us,
           st.lat_count ? (double)st.lat_sum_us / (double)st.lat_count : 0.0,
           cpu_seconds(ru.ru_utime.tv_sec, ru.ru_utime.tv_usec), cpu_seconds(ru.ru_stime.tv_sec, ru.ru_stime.tv_usec));
    fflush(stdout);
}

static enum mode parse_mode(const char *s) {
    for (int m = 0; m < 4; m++)
        if (strcmp(s, MODE_NAMES[m]) == 0) return (enum mode)m;
    fprintf(stderr, "unknown --mode %s\n", s);
    exit(2);
}

static void usage(const char *argv0) {
    fprintf(stderr, "usage: %s --port P --mode setup|bulk|pingpong|idle [--host 127.0.0.1] [--conns N]\n"
                    "  [--duration S] [--timeout S] [--max-ops N] [--max-bytes N] [--msg-size B] [--burst N]\n"
                    "  [--cookie-prefix STR] [--users N]\n", argv0);
    exit(2);
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *key = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (val == NULL) usage(argv[0]);
        i++;
        if (strcmp(key, "--host") == 0) opt.host = val;
        else if (strcmp(key, "--port") == 0) opt.port = atoi(val);
        else if (strcmp(key, "--mode") == 0) opt.mode = parse_mode(val);
        else if (strcmp(key, "--conns") == 0) opt.conns = atoi(val);
        else if (strcmp(key, "--duration") == 0) opt.duration_s = parse_double(val, key);
        else if (strcmp(key, "--timeout") == 0) opt.timeout_s = parse_double(val, key);
        else if (strcmp(key, "--max-ops") == 0) opt.max_ops = strtoull(val, NULL, 10);
        else if (strcmp(key, "--max-bytes") == 0) opt.max_bytes = strtoull(val, NULL, 10);
        else if (strcmp(key, "--msg-size") == 0) opt.msg_size = atoi(val);
        else if (strcmp(key, "--burst") == 0) opt.burst = atoi(val);
        else if (strcmp(key, "--cookie-prefix") == 0) opt.prefix = val;
        else if (strcmp(key, "--users") == 0) opt.users = (uint32_t)strtoul(val, NULL, 10);
        else usage(argv[0]);
    }
    if (opt.port <= 0 || opt.conns < 1 || opt.burst < 1 || opt.msg_size < 1 || opt.msg_size > MAX_MSG ||
        strlen(opt.prefix) > 64)
        usage(argv[0]);
    if (opt.timeout_s == 0) opt.timeout_s = opt.duration_s + 60.0;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    max_fds = raise_nofile();
    conns = calloc((size_t)max_fds, sizeof *conns);
    epfd = epoll_create1(0);
    if (conns == NULL || epfd < 0) die("setup");
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &target.sin_addr) != 1) usage(argv[0]);
    memset(message, 'm', sizeof message);
    t_start = now_ns();
    int timed_out = run();
    t_end = now_ns();
    print_results(timed_out);
    return timed_out;
}
