/* Benchmark load generator, the RDP session model: N concurrent sessions, single-threaded, epoll.
 *
 * Every session connects like rdpb_loadgen (an X.224 Connection Request with the cookie
 * mstshash=<prefix><n>, the Connection Confirm checked byte for byte), sends the mode byte 'R'
 * and waits for the test server's welcome, which names the backend it reached. Then it lives as
 * a state machine (the wire format is in common.h, the sizes and their sources in
 * benchmarks/README.md):
 *   idle    heartbeats only
 *   typing  an input of 40-100 bytes every 100-300 ms, answered by a 3,750-byte update
 *   mouse   an input every 25-75 ms, answered by a 500-byte update
 *   scroll  a wheel input every 50-150 ms, answered by a 1,000-byte update and a burst of
 *           54 MSS-sized segments (54 x 1,448 bytes)
 *   video   a 40-byte frame acknowledgement every 33.3 ms (30 fps), answered by a frame of
 *           23 x 1,448 bytes; a frame is only asked for once the last one has arrived
 * and, in every state, a 20-byte heartbeat each way every 5 s. A session stays in a state for an
 * exponentially distributed time (mean per state, --dwell-scale scales them) and then picks its
 * next state so that the share of time in each state is --mix. --pinned-video PCT: that share of
 * the sessions (spread evenly over the indexes) stays in video for good; the others follow --mix.
 * Every input carries its send time; the server echoes it in the update, so the client measures
 * input -> update round trips (recorded for inputs sent inside the measurement window) in 1 us
 * buckets up to 2 s and 1 ms buckets up to 60 s.
 *
 * Phases: establish all --sessions (at most --burst handshakes at a time), --warmup seconds of
 * traffic, a --duration window (prints {"event": "window_start"} / {"event": "window_end"} so the
 * runner can sample the proxy), a short drain. With --storm R: then every session is dropped
 * at once (reset) and each reconnects at a uniformly random moment within R seconds (a refused
 * attempt is retried after 1 s, at most --attempts times); the storm ends when every user is
 * back (welcome received) or given up.
 *
 * Every loop is bounded by count and by time (--timeout). Prints one JSON object on stdout.
 */
#include "common.h"

#include <arpa/inet.h>
#include <math.h>
#include <signal.h>
#include <sys/epoll.h>

#define MAX_EVENTS 1024
#define HIST_FINE_US 2000000 /* latency histograms: 1 us buckets up to 2 s, */
#define HIST_COARSE 58000      /* then 1 ms buckets up to 60 s, the rest in the last one */
#define HIST_BUCKETS (HIST_FINE_US + HIST_COARSE)
#define MSS 1448        /* a TCP segment's payload on a 1500-byte Ethernet path with timestamps */
#define HEARTBEAT_NS 5000000000ull
#define RETRY_NS 1000000000ull
#define DRAIN_NS 500000000ull /* after the window: replies to inputs sent inside it still count */
#define TICK_MS 5
#define MAX_BACKENDS 16
#define NEVER UINT64_MAX

enum st { ST_IDLE, ST_TYPING, ST_MOUSE, ST_SCROLL, ST_VIDEO, N_ST };
static const char *ST_NAMES[N_ST] = {"idle", "typing", "mouse", "scroll", "video"};
/* per state: input interval (min, max ms), update bytes, burst bytes, mean dwell s */
static const struct {
    double gap_min_ms, gap_max_ms;
    uint32_t reply, burst;
    double dwell_s;
} MODEL[N_ST] = {
    [ST_IDLE] = {0, 0, 0, 0, 30.0},
    [ST_TYPING] = {100, 300, 3750, 0, 20.0},
    [ST_MOUSE] = {25, 75, 500, 0, 10.0},
    [ST_SCROLL] = {50, 150, 1000, 54 * MSS, 3.0},
    [ST_VIDEO] = {33.333, 33.333, 0, 23 * MSS, 30.0},
};

enum hist_id { H_TYPING, H_MOUSE, H_SCROLL, H_INPUT, H_HEARTBEAT, H_BURST, H_FRAME, H_SETUP, H_RECONNECT, N_H };
static const char *H_NAMES[N_H] = {"typing", "mouse", "scroll", "input", "heartbeat", "burst", "frame", "setup",
                                   "reconnect"};

struct hist {
    uint32_t *b;
    uint64_t count, sum_us, max_us;
};

enum cstate { C_DOWN, C_CONNECTING, C_WAIT_CC, C_WAIT_WELCOME, C_UP, C_RETRY, C_LOST };
enum phase { PH_ESTABLISH, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_STORM, PH_DONE };

struct sess {
    int fd;
    uint8_t conn, state, pinned, cc_got, hdr_got, bulk_out, attempts, reconnecting;
    int8_t backend, first_backend;
    uint32_t payload_left;
    unsigned char hdr[RDP_SMSG_HDR];
    uint64_t rng, t_conn, next_input, next_hb, state_end, sched, reconnect_at;
};

static struct {
    const char *host, *prefix;
    int port, sessions, burst, attempts;
    double duration_s, warmup_s, timeout_s, storm_s, dwell_scale;
    double mix[N_ST];
    int pinned_video;
    uint64_t seed, max_inputs;
} opt = {"127.0.0.1", "user", 0, 10, 128, 5, 5.0, 1.0, 0, 0, 1.0, {40, 35, 15, 8, 2}, 0, 1, 100000000ull};

static struct {
    int established, failed, up, errors, died, refusals, back, lost, moved, same;
    uint64_t inputs, inputs_window, updates, frames_asked, frames_skipped, bursts_skipped, heartbeats;
    uint64_t bytes_out, bytes_in, bytes_in_window;
    int in_state[N_ST]; /* sessions per state when the window starts */
    int per_backend[MAX_BACKENDS], per_backend_after[MAX_BACKENDS];
    char first_error[200];
} st;

static struct sess *sess;
static int *fd2s, max_fds, epfd;
static struct hist hists[N_H];
static enum phase phase = PH_ESTABLISH;
static uint64_t t_start, t_window, t_window_end, t_drain_end, t_drop, t_last_back, phase_end;
static int launched, inflight;
static double next_p[N_ST]; /* next-state probabilities, so that time shares match --mix */
static struct sockaddr_in target;
static unsigned char scratch[IO_CHUNK];

/* ---- timer heap (lazy: an entry whose time is not its session's `sched` is stale) ---------- */

struct tev {
    uint64_t t;
    int s;
};
static struct tev *heap;
static int heap_len, heap_cap;

static void heap_push(uint64_t t, int s) {
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, (size_t)heap_cap * sizeof *heap);
        if (heap == NULL) die("realloc");
    }
    int i = heap_len++;
    while (i > 0 && heap[(i - 1) / 2].t > t) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = (struct tev){t, s};
}

static struct tev heap_pop(void) {
    struct tev top = heap[0], last = heap[--heap_len];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= heap_len) break;
        if (c + 1 < heap_len && heap[c + 1].t < heap[c].t) c++;
        if (heap[c].t >= last.t) break;
        heap[i] = heap[c];
        i = c;
    }
    if (heap_len > 0) heap[i] = last;
    return top;
}

static void schedule(int s, uint64_t t) {
    if (t == NEVER || t == sess[s].sched) return;
    if (sess[s].sched != 0 && sess[s].sched != NEVER && sess[s].sched < t) return; /* an earlier one is due */
    sess[s].sched = t;
    heap_push(t, s);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static uint64_t rnd(struct sess *s) { /* xorshift64* */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ull;
}

static double urand(struct sess *s) { return (double)(rnd(s) >> 11) / 9007199254740992.0; }

static uint64_t ms_ns(double ms) { return (uint64_t)(ms * 1e6); }

static void note_error(const char *what, int err) {
    st.errors++;
    if (st.first_error[0] == '\0')
        snprintf(st.first_error, sizeof st.first_error, "%s: %s", what, err ? strerror(err) : "unexpected");
}

static void record(enum hist_id h, uint64_t t0, uint64_t now) {
    uint64_t us = (now - t0) / 1000;
    struct hist *x = &hists[h];
    uint64_t coarse = us < HIST_FINE_US ? 0 : (us - HIST_FINE_US) / 1000;
    x->b[us < HIST_FINE_US ? us : HIST_FINE_US + (coarse < HIST_COARSE ? coarse : HIST_COARSE - 1)]++;
    x->count++;
    x->sum_us += us;
    if (us > x->max_us) x->max_us = us;
}

static uint64_t percentile_us(const struct hist *x, double p) {
    if (x->count == 0) return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)x->count), seen = 0;
    for (uint64_t i = 0; i < HIST_BUCKETS; i++) {
        seen += x->b[i];
        if (seen >= rank) return i < HIST_FINE_US ? i : HIST_FINE_US + (i - HIST_FINE_US) * 1000;
    }
    return x->max_us;
}

static void watch(int fd, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epfd, op, fd, &ev) != 0) die("epoll_ctl");
}

static int in_window(uint64_t t0) { return t0 >= t_window && t_window != 0 && t0 < t_window_end; }

/* ---- the state machine ------------------------------------------------------------------------ */

static int pick_state(struct sess *s, const double *p) {
    double u = urand(s), acc = 0;
    for (int i = 0; i < N_ST; i++) {
        acc += p[i];
        if (u < acc) return i;
    }
    return ST_IDLE;
}

static uint64_t dwell(struct sess *s) {
    double mean = MODEL[s->state].dwell_s * opt.dwell_scale;
    return (uint64_t)(-log(1.0 - urand(s)) * mean * 1e9);
}

static uint64_t gap(struct sess *s) {
    const double lo = MODEL[s->state].gap_min_ms, hi = MODEL[s->state].gap_max_ms;
    return lo <= 0 ? NEVER : ms_ns(lo + (hi - lo) * urand(s));
}

static void enter_state(struct sess *s, int state, uint64_t now, int first) {
    s->state = (uint8_t)state;
    s->state_end = s->pinned ? NEVER : now + dwell(s);
    uint64_t g = gap(s);
    /* the first input of a session lands anywhere in its first gap, so sessions do not march in step */
    s->next_input = g == NEVER ? NEVER : now + (first ? (uint64_t)((double)g * urand(s)) : g);
}

static uint64_t next_due(const struct sess *s) {
    uint64_t t = s->next_hb;
    if (s->next_input < t) t = s->next_input;
    if (s->state_end < t) t = s->state_end;
    return t;
}

static void drop(int i, int count_died);

static int send_msg(int i, uint8_t type, uint8_t len, uint32_t reply, uint32_t burst, uint64_t now) {
    struct sess *s = &sess[i];
    unsigned char buf[RDP_CMSG_MAX];
    struct rdp_cmsg m = {.type = type, .len = len, .kind = s->state, .reply = reply, .burst = burst, .t0 = now};
    memset(buf, 'k', len);
    memcpy(buf, &m, sizeof m);
    /* at most 100 bytes into a socket that is never more than a few messages behind: a partial
     * write means the other side stopped reading, which is an error here */
    if (send(s->fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len) {
        note_error("send (the proxy stopped reading)", errno);
        drop(i, 1);
        return -1;
    }
    st.bytes_out += len;
    return 0;
}

static void send_input(int i, uint64_t now) {
    struct sess *s = &sess[i];
    uint32_t burst = MODEL[s->state].burst;
    if (s->state == ST_VIDEO) {
        st.frames_asked += in_window(now);
        if (s->bulk_out) { /* the last frame has not arrived: this one is skipped */
            st.frames_skipped += in_window(now);
            return;
        }
    } else if (burst && s->bulk_out) {
        st.bursts_skipped += in_window(now);
        return;
    }
    uint8_t len = (uint8_t)(s->state == ST_VIDEO ? 40 : 40 + rnd(s) % 61);
    if (send_msg(i, 'I', len, MODEL[s->state].reply, burst, now) != 0) return;
    if (burst) s->bulk_out = 1;
    st.inputs++;
    st.inputs_window += in_window(now);
}

/* A session's timers fired: state change, heartbeat, input. */
static void act(int i, uint64_t now) {
    struct sess *s = &sess[i];
    if (s->conn != C_UP || phase == PH_DONE) return;
    if (now >= s->state_end) {
        enter_state(s, pick_state(s, next_p), now, 0);
    }
    if (now >= s->next_hb) {
        s->next_hb = now + HEARTBEAT_NS;
        if (send_msg(i, 'H', RDP_CMSG_HDR, 0, 0, now) != 0) return;
        st.heartbeats++;
    }
    if (now >= s->next_input) {
        s->next_input = now + gap(s);
        send_input(i, now);
    }
}

/* ---- connections ------------------------------------------------------------------------------ */

static int build_request(unsigned char *out, int id) {
    static const unsigned char neg_req[8] = {0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00};
    char cookie[128];
    int clen = snprintf(cookie, sizeof cookie, "Cookie: mstshash=%s%d\r\n", opt.prefix, id);
    int total = 4 + 7 + clen + 8;
    const unsigned char head[11] = {0x03, 0x00, (unsigned char)(total >> 8), (unsigned char)total,
                                    (unsigned char)(total - 5), 0xe0, 0, 0, 0, 0, 0};
    memcpy(out, head, sizeof head);
    memcpy(out + 11, cookie, (size_t)clen);
    memcpy(out + 11 + clen, neg_req, sizeof neg_req);
    return total;
}

static void drop(int i, int count_died) {
    struct sess *s = &sess[i];
    if (s->fd < 0) return;
    if (s->conn == C_CONNECTING || s->conn == C_WAIT_CC || s->conn == C_WAIT_WELCOME) inflight--;
    if (s->conn == C_UP) {
        st.up--;
        st.died += count_died;
    }
    fd2s[s->fd] = -1;
    close(s->fd);
    s->fd = -1;
    s->conn = C_DOWN;
    s->sched = 0;
}

/* A connection attempt failed: during the storm it is a refusal (retried), before it an error. */
static void attempt_failed(int i, const char *what, int err, uint64_t now) {
    struct sess *s = &sess[i];
    int was_up = s->conn == C_UP;
    drop(i, phase != PH_STORM);
    if (phase != PH_STORM || was_up) {
        note_error(what, err);
        if (!was_up) st.failed++;
        s->conn = C_LOST;
        return;
    }
    st.refusals++;
    if (s->attempts >= opt.attempts) {
        st.lost++;
        s->conn = C_LOST;
        return;
    }
    s->conn = C_RETRY;
    s->reconnect_at = now + RETRY_NS;
    schedule(i, s->reconnect_at);
}

static int send_request(int i) {
    unsigned char cr[256];
    int len = build_request(cr, i);
    ssize_t n = send(sess[i].fd, cr, (size_t)len, MSG_NOSIGNAL);
    if (n == len) {
        sess[i].conn = C_WAIT_CC;
        return 1;
    }
    if (n < 0 && errno == EAGAIN) return 0;
    attempt_failed(i, "send request", n < 0 ? errno : 0, now_ns());
    return -1;
}

static void launch(int i, uint64_t now) {
    struct sess *s = &sess[i];
    s->attempts++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || fd >= max_fds) {
        if (fd >= 0) close(fd);
        note_error("socket", fd < 0 ? errno : EMFILE);
        if (phase == PH_STORM) st.lost++;
        else st.failed++;
        s->conn = C_LOST;
        return;
    }
    set_nodelay(fd);
    s->fd = fd;
    fd2s[fd] = i;
    s->conn = C_CONNECTING;
    s->t_conn = now;
    s->cc_got = s->hdr_got = 0;
    s->payload_left = 0;
    s->bulk_out = 0;
    inflight++;
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0 && errno != EINPROGRESS) {
        attempt_failed(i, "connect", errno, now);
        return;
    }
    int sent = send_request(i);
    if (sent >= 0) watch(fd, sent ? EPOLLIN : EPOLLOUT, EPOLL_CTL_ADD);
}

static void welcome(int i, int backend, uint64_t now) {
    struct sess *s = &sess[i];
    inflight--;
    s->conn = C_UP;
    st.up++;
    s->backend = (int8_t)backend;
    if (s->reconnecting) {
        record(H_RECONNECT, s->t_conn, now);
        s->reconnecting = 0;
        st.back++;
        t_last_back = now;
        if (backend == s->first_backend) st.same++;
        else st.moved++;
        if (backend < MAX_BACKENDS) st.per_backend_after[backend]++;
    } else {
        record(H_SETUP, s->t_conn, now);
        st.established++;
        s->first_backend = (int8_t)backend;
        if (backend < MAX_BACKENDS) st.per_backend[backend]++;
    }
    s->next_hb = now + (uint64_t)((double)HEARTBEAT_NS * urand(s));
    if (s->state_end == 0) enter_state(s, s->state, now, 1);
    else s->next_input = s->next_input == NEVER ? NEVER : now + gap(s);
    s->sched = 0;
    schedule(i, next_due(s));
}

/* A whole server message has arrived (its header is in s->hdr). */
static void message_done(int i, uint64_t now) {
    struct sess *s = &sess[i];
    struct rdp_smsg m;
    memcpy(&m, s->hdr, sizeof m);
    if (s->conn == C_WAIT_WELCOME) {
        if (m.type != 'W') {
            attempt_failed(i, "no welcome from the test server", 0, now);
            return;
        }
        welcome(i, m.backend, now);
        return;
    }
    if (m.backend != (uint8_t)s->backend) note_error("answer from another backend", 0);
    int counted = in_window(m.t0);
    switch (m.type) {
    case 'H':
        if (counted) record(H_HEARTBEAT, m.t0, now);
        break;
    case 'U':
        st.updates++;
        if (counted && m.kind >= ST_TYPING && m.kind <= ST_SCROLL) {
            record((enum hist_id)(H_TYPING + m.kind - ST_TYPING), m.t0, now);
            record(H_INPUT, m.t0, now);
        }
        break;
    case 'B':
        s->bulk_out = 0;
        if (counted) record(m.kind == ST_VIDEO ? H_FRAME : H_BURST, m.t0, now);
        break;
    default: note_error("unknown message from the test server", 0); break;
    }
}

static void on_stream(int i, uint64_t now) {
    struct sess *s = &sess[i];
    ssize_t n = recv(s->fd, scratch, sizeof scratch, 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return;
        attempt_failed(i, "connection closed by the peer", n < 0 ? errno : 0, now);
        return;
    }
    st.bytes_in += (uint64_t)n;
    if (phase == PH_MEASURE) st.bytes_in_window += (uint64_t)n;
    size_t p = 0, len = (size_t)n;
    while (p < len && s->fd >= 0) {
        if (s->payload_left > 0) {
            size_t take = s->payload_left < len - p ? s->payload_left : len - p;
            s->payload_left -= (uint32_t)take;
            p += take;
            if (s->payload_left == 0) message_done(i, now);
            continue;
        }
        size_t want = (size_t)(RDP_SMSG_HDR - s->hdr_got);
        size_t take = want < len - p ? want : len - p;
        memcpy(s->hdr + s->hdr_got, scratch + p, take);
        s->hdr_got = (uint8_t)(s->hdr_got + take);
        p += take;
        if (s->hdr_got < RDP_SMSG_HDR) continue;
        s->hdr_got = 0;
        memcpy(&s->payload_left, s->hdr + 4, sizeof s->payload_left);
        if (s->payload_left == 0) message_done(i, now);
    }
}

static void on_event(const struct epoll_event *ev, uint64_t now) {
    int i = fd2s[ev->data.fd];
    if (i < 0) return;
    struct sess *s = &sess[i];
    switch (s->conn) {
    case C_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (ev->events & (EPOLLERR | EPOLLHUP))) {
            attempt_failed(i, "connect", err, now);
            return;
        }
        if (send_request(i) > 0) watch(s->fd, EPOLLIN, EPOLL_CTL_MOD);
        break;
    }
    case C_WAIT_CC: {
        ssize_t n = recv(s->fd, scratch, (size_t)(CC_LEN - s->cc_got), 0);
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN) return;
            attempt_failed(i, "closed before the Connection Confirm", n < 0 ? errno : 0, now);
            return;
        }
        if (memcmp(scratch, CONNECTION_CONFIRM + s->cc_got, (size_t)n) != 0) {
            attempt_failed(i, "not the expected Connection Confirm", 0, now);
            return;
        }
        s->cc_got = (uint8_t)(s->cc_got + n);
        if (s->cc_got < CC_LEN) return;
        unsigned char mode = MODE_RDP;
        if (send(s->fd, &mode, 1, MSG_NOSIGNAL) != 1) {
            attempt_failed(i, "send mode", errno, now);
            return;
        }
        s->conn = C_WAIT_WELCOME;
        break;
    }
    case C_WAIT_WELCOME:
    case C_UP: on_stream(i, now); break;
    default: break;
    }
}

/* ---- phases ----------------------------------------------------------------------------------- */

static void print_event(const char *name) {
    printf("{\"event\": \"%s\", \"up\": %d}\n", name, st.up);
    fflush(stdout);
}

static void start_storm(uint64_t now) {
    t_drop = now;
    phase = PH_STORM;
    print_event("drop");
    struct linger hard = {.l_onoff = 1, .l_linger = 0}; /* a reset, as when a node goes away */
    for (int i = 0; i < opt.sessions; i++) {
        struct sess *s = &sess[i];
        if (s->conn != C_UP) continue;
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
        drop(i, 0);
        s->reconnecting = 1;
        s->attempts = 0;
        s->conn = C_RETRY;
        s->reconnect_at = now + (uint64_t)(opt.storm_s * 1e9 * urand(s));
        s->sched = 0;
        schedule(i, s->reconnect_at);
    }
}

static int storm_over(void) { return st.back + st.lost >= st.established - st.died; }

static void tick(uint64_t now) {
    switch (phase) {
    case PH_ESTABLISH:
        while (launched < opt.sessions && inflight < opt.burst) launch(launched++, now);
        if (launched == opt.sessions && inflight == 0) {
            phase = PH_WARMUP;
            phase_end = now + (uint64_t)(opt.warmup_s * 1e9);
        }
        break;
    case PH_WARMUP:
        if (now >= phase_end) {
            phase = PH_MEASURE;
            t_window = now;
            t_window_end = now + (uint64_t)(opt.duration_s * 1e9);
            for (int i = 0; i < opt.sessions; i++)
                if (sess[i].conn == C_UP) st.in_state[sess[i].state]++;
            print_event("window_start");
        }
        break;
    case PH_MEASURE:
        if (now >= t_window_end || st.inputs_window >= opt.max_inputs) {
            t_window_end = now;
            t_drain_end = now + DRAIN_NS;
            phase = PH_DRAIN;
            print_event("window_end");
        }
        break;
    case PH_DRAIN:
        if (now >= t_drain_end) {
            if (opt.storm_s > 0) start_storm(now);
            else phase = PH_DONE;
        }
        break;
    case PH_STORM:
        if (storm_over()) phase = PH_DONE;
        break;
    case PH_DONE: break;
    }
}

static void run_timers(uint64_t now) {
    while (phase != PH_DONE && heap_len > 0 && heap[0].t <= now) {
        struct tev e = heap_pop();
        struct sess *s = &sess[e.s];
        if (s->sched != e.t) continue; /* stale */
        s->sched = 0;
        if (s->conn == C_RETRY) {
            if (now >= s->reconnect_at && phase == PH_STORM) launch(e.s, now);
            continue;
        }
        act(e.s, now);
        uint64_t t = next_due(s);
        if (s->conn == C_UP) schedule(e.s, t > now ? t : now + 1000000); /* never due again this round */
    }
}

static int run(void) {
    uint64_t deadline = t_start + (uint64_t)(opt.timeout_s * 1e9);
    struct epoll_event events[MAX_EVENTS];
    while (phase != PH_DONE) {
        uint64_t now = now_ns();
        if (now >= deadline) {
            int by[C_LOST + 1] = {0};
            for (int i = 0; i < opt.sessions; i++) by[sess[i].conn]++;
            char what[160];
            snprintf(what, sizeof what, "timeout in phase %d (sessions down %d, connecting %d, waiting for the "
                     "Confirm %d, the welcome %d, up %d, retrying %d, lost %d)", (int)phase, by[C_DOWN],
                     by[C_CONNECTING], by[C_WAIT_CC], by[C_WAIT_WELCOME], by[C_UP], by[C_RETRY], by[C_LOST]);
            note_error(what, ETIMEDOUT);
            return 1;
        }
        tick(now);
        run_timers(now);
        int wait_ms = TICK_MS;
        if (heap_len > 0) {
            uint64_t t = now_ns();
            /* rounded up: a timer fires up to 1 ms late (harmless: an input's time is taken when it is
             * sent), and the loop never spins on epoll_wait(0) waiting for one */
            uint64_t ahead = heap[0].t > t ? (heap[0].t - t + 999999) / 1000000 : 0;
            if (ahead < (uint64_t)wait_ms) wait_ms = (int)ahead;
        }
        int n = epoll_wait(epfd, events, MAX_EVENTS, wait_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        now = now_ns();
        for (int k = 0; k < n; k++) on_event(&events[k], now);
    }
    return 0;
}

/* ---- output and arguments --------------------------------------------------------------------- */

static void print_hist(const char *name, const struct hist *x, int last) {
    printf("\"%s\": {\"count\": %llu, \"p50_us\": %llu, \"p99_us\": %llu, \"p999_us\": %llu, \"max_us\": %llu, "
           "\"mean_us\": %.1f}%s",
           name, (unsigned long long)x->count, (unsigned long long)percentile_us(x, 0.50),
           (unsigned long long)percentile_us(x, 0.99), (unsigned long long)percentile_us(x, 0.999),
           (unsigned long long)x->max_us, x->count ? (double)x->sum_us / (double)x->count : 0.0, last ? "" : ", ");
}

static void print_backends(const char *name, const int *counts) {
    printf("\"%s\": [", name);
    for (int b = 0; b < MAX_BACKENDS; b++) printf("%s%d", b ? ", " : "", counts[b]);
    printf("], ");
}

static void print_results(int timed_out, uint64_t t_end) {
    double window = t_window ? (double)((t_window_end ? t_window_end : t_end) - t_window) / 1e9 : 0.0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"mode\": \"sessions\", \"sessions\": %d, \"established\": %d, \"failed\": %d, \"died\": %d, "
           "\"up_at_end\": %d, \"errors\": %d, \"first_error\": \"%s\", \"timed_out\": %s, ",
           opt.sessions, st.established, st.failed, st.died, st.up, st.errors, st.first_error,
           timed_out ? "true" : "false");
    printf("\"window_s\": %.6f, \"wall_s\": %.6f, \"inputs\": %llu, \"inputs_window\": %llu, \"updates\": %llu, "
           "\"heartbeats\": %llu, \"frames_asked\": %llu, \"frames_skipped\": %llu, \"bursts_skipped\": %llu, "
           "\"bytes_out\": %llu, \"bytes_in\": %llu, \"mb_per_s_in_window\": %.3f, ",
           window, (double)(t_end - t_start) / 1e9, (unsigned long long)st.inputs,
           (unsigned long long)st.inputs_window, (unsigned long long)st.updates, (unsigned long long)st.heartbeats,
           (unsigned long long)st.frames_asked, (unsigned long long)st.frames_skipped,
           (unsigned long long)st.bursts_skipped, (unsigned long long)st.bytes_out, (unsigned long long)st.bytes_in,
           window > 0 ? (double)st.bytes_in_window / window / 1e6 : 0.0);
    print_backends("per_backend", st.per_backend);
    printf("\"states_at_window_start\": {");
    for (int k = 0; k < N_ST; k++) printf("%s\"%s\": %d", k ? ", " : "", ST_NAMES[k], st.in_state[k]);
    printf("}, ");
    if (opt.storm_s > 0) {
        print_backends("per_backend_after", st.per_backend_after);
        printf("\"storm\": {\"within_s\": %.3f, \"users\": %d, \"back\": %d, \"lost\": %d, \"refusals\": %d, "
               "\"same_backend\": %d, \"moved\": %d, \"all_back_s\": %.6f}, ",
               opt.storm_s, st.established - st.died, st.back, st.lost, st.refusals, st.same, st.moved,
               t_last_back > t_drop && t_drop ? (double)(t_last_back - t_drop) / 1e9 : 0.0);
    }
    printf("\"lat\": {");
    for (int h = 0; h < N_H; h++) print_hist(H_NAMES[h], &hists[h], h == N_H - 1);
    printf("}, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f}\n", cpu_seconds(ru.ru_utime.tv_sec, ru.ru_utime.tv_usec),
           cpu_seconds(ru.ru_stime.tv_sec, ru.ru_stime.tv_usec));
    fflush(stdout);
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s --port P [--host 127.0.0.1] [--sessions N] [--duration S] [--warmup S] [--timeout S]\n"
            "  [--burst N] [--cookie-prefix STR] [--mix I,T,M,S,V] [--pinned-video PCT] [--dwell-scale X]\n"
            "  [--storm S] [--attempts N] [--seed N] [--max-inputs N]\n",
            argv0);
    exit(2);
}

static void parse_mix(const char *text) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", text);
    char *save = NULL, *tok = strtok_r(buf, ",", &save);
    for (int i = 0; i < N_ST; i++, tok = strtok_r(NULL, ",", &save)) {
        if (tok == NULL) {
            fprintf(stderr, "--mix needs %d comma-separated shares (idle,typing,mouse,scroll,video)\n", N_ST);
            exit(2);
        }
        opt.mix[i] = parse_double(tok, "--mix");
    }
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *key = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (val == NULL) usage(argv[0]);
        i++;
        if (strcmp(key, "--host") == 0) opt.host = val;
        else if (strcmp(key, "--port") == 0) opt.port = atoi(val);
        else if (strcmp(key, "--sessions") == 0) opt.sessions = atoi(val);
        else if (strcmp(key, "--duration") == 0) opt.duration_s = parse_double(val, key);
        else if (strcmp(key, "--warmup") == 0) opt.warmup_s = parse_double(val, key);
        else if (strcmp(key, "--timeout") == 0) opt.timeout_s = parse_double(val, key);
        else if (strcmp(key, "--burst") == 0) opt.burst = atoi(val);
        else if (strcmp(key, "--cookie-prefix") == 0) opt.prefix = val;
        else if (strcmp(key, "--mix") == 0) parse_mix(val);
        else if (strcmp(key, "--pinned-video") == 0) opt.pinned_video = atoi(val);
        else if (strcmp(key, "--dwell-scale") == 0) opt.dwell_scale = parse_double(val, key);
        else if (strcmp(key, "--storm") == 0) opt.storm_s = parse_double(val, key);
        else if (strcmp(key, "--attempts") == 0) opt.attempts = atoi(val);
        else if (strcmp(key, "--seed") == 0) opt.seed = strtoull(val, NULL, 10);
        else if (strcmp(key, "--max-inputs") == 0) opt.max_inputs = strtoull(val, NULL, 10);
        else usage(argv[0]);
    }
    double total = 0;
    for (int i = 0; i < N_ST; i++) total += opt.mix[i];
    if (opt.port <= 0 || opt.sessions < 1 || opt.burst < 1 || opt.attempts < 1 || opt.attempts > 100 ||
        opt.pinned_video < 0 || opt.pinned_video > 100 || total <= 0 || opt.dwell_scale <= 0 ||
        strlen(opt.prefix) > 64)
        usage(argv[0]);
    if (opt.timeout_s == 0) opt.timeout_s = opt.warmup_s + opt.duration_s + opt.storm_s + 120.0;
    /* time share w_i with mean dwell d_i: enter state i with probability proportional to w_i / d_i */
    double norm = 0;
    for (int i = 0; i < N_ST; i++) norm += opt.mix[i] / MODEL[i].dwell_s;
    for (int i = 0; i < N_ST; i++) next_p[i] = opt.mix[i] / MODEL[i].dwell_s / norm;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    max_fds = raise_nofile();
    if (opt.sessions > max_fds - 16) {
        fprintf(stderr, "--sessions %d does not fit the open-files limit %d\n", opt.sessions, max_fds);
        exit(2);
    }
    sess = calloc((size_t)opt.sessions, sizeof *sess);
    fd2s = malloc((size_t)max_fds * sizeof *fd2s);
    epfd = epoll_create1(0);
    if (sess == NULL || fd2s == NULL || epfd < 0) die("setup");
    for (int f = 0; f < max_fds; f++) fd2s[f] = -1;
    for (int h = 0; h < N_H; h++)
        if ((hists[h].b = calloc(HIST_BUCKETS, sizeof *hists[h].b)) == NULL) die("calloc");
    double share[N_ST]; /* the initial state: by time share, so the mix holds from the start */
    double total = 0;
    for (int k = 0; k < N_ST; k++) total += opt.mix[k];
    for (int k = 0; k < N_ST; k++) share[k] = opt.mix[k] / total;
    for (int i = 0; i < opt.sessions; i++) {
        struct sess *s = &sess[i];
        s->fd = -1;
        s->backend = s->first_backend = -1;
        s->rng = (opt.seed * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(i + 1) * 0xD1B54A32D192ED03ull);
        if (s->rng == 0) s->rng = 1;
        /* pinned: exactly pinned_video % of every 100 consecutive sessions, spread evenly */
        s->pinned = (uint8_t)((i + 1) * opt.pinned_video / 100 > i * opt.pinned_video / 100);
        s->state = (uint8_t)(s->pinned ? ST_VIDEO : pick_state(s, share));
        s->next_input = s->next_hb = NEVER;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &target.sin_addr) != 1) usage(argv[0]);
    t_start = now_ns();
    int timed_out = run();
    print_results(timed_out, now_ns());
    return timed_out;
}
