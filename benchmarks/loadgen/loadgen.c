/* loadgen: a WebSocket load generator for the NanoSocket benchmark suite.
 *
 * One epoll thread, non-blocking sockets, its own minimal RFC 6455 client: HTTP/1.1 upgrade with
 * a checked Sec-WebSocket-Accept, masked client frames (7/16/64-bit lengths), a streaming parser
 * for server frames of any size (fragmented messages included; payloads are never buffered whole),
 * pongs for pings, and a closing handshake at the end. Everything it does is bounded in count and
 * in time.
 *
 * Modes (see usage()):
 *   echo    C connections each keep W requests in flight; latency is send -> reply, FIFO per
 *           connection. -w 1 measures ping-pong latency.
 *   fanout  S subscribers join, then P publishers join and keep W publishes in flight each, freed by
 *           their own copy of the broadcast; the payload carries a send time so subscribers measure
 *           end-to-end latency.
 *   conns   opens N connections (bounded handshakes in flight), holds them, optionally sends one
 *           frame on each and counts the replies.
 *
 * Output: one JSON line on stdout; progress and "# event=..." marker lines on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"
#include "sha1.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define LOADGEN_VERSION "2"
#define MAX_IGNORE 8
#define CAPTURE 64           /* first bytes of each message kept for --ignore-prefix */
#define MAX_HANDSHAKE 8192   /* largest upgrade response accepted */
#define READ_SIZE (256 * 1024)
#define MAX_EVENTS 1024
#define STAMP_LEN 26         /* "@@" + 16 hex digits of send time (ns) + 8 hex digits of publisher */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------ configuration */

enum mode { MODE_ECHO, MODE_FANOUT, MODE_CONNS };
static const char *const MODE_NAMES[] = {"echo", "fanout", "conns"};
/* plain: WebSocket messages as they are. socketio: Engine.IO v4 / Socket.IO v5 over a WebSocket
 * (sends the "40" connect packet after the upgrade and waits for "40{...}", answers pings "2" with
 * "3", skips the open packet "0{...}"; templates carry the "42[...]" framing themselves). */
enum dialect { D_PLAIN, D_SOCKETIO };
static const char *const DIALECT_NAMES[] = {"plain", "socketio"};
#define SIO_PATH "/socket.io/?EIO=4&transport=websocket"

typedef struct {
    enum mode mode;
    const char *host;
    int port;
    const char *path;
    int conns;             /* echo: connections; fanout: subscribers; conns: connections */
    int window;            /* requests (echo) or publishes (fanout) in flight per connection */
    long size;             /* payload bytes replacing {p} */
    const char *tmpl;      /* message template, {p} is replaced by the payload */
    bool binary;
    double duration, warmup, hold, connect_timeout, drain, close_timeout;
    int pubs;
    const char *join;
    int join_acks;
    const char *conns_msg;
    int handshakes;        /* most connections in TCP connect or upgrade at once */
    int sources;           /* source addresses 127.0.0.1 .. 127.0.0.K (0: automatic) */
    const char *ignore[MAX_IGNORE];
    size_t ignore_len[MAX_IGNORE];
    int n_ignore;
    const char *ignore_answer;
    enum dialect dialect;
    const char *ack_prefix; /* echo: each reply must be this prefix + the request's {a} id */
    bool deflate;           /* offer permessage-deflate; accept compressed server messages */
    bool words;             /* fill {p} with pseudo-random words instead of 'x' */
    bool quiet;
} config_t;

static config_t cfg = {
    .mode = MODE_ECHO,
    .host = "127.0.0.1",
    .port = 0,
    .path = NULL,
    .conns = 50,
    .window = 1,
    .size = 100,
    .tmpl = "{p}",
    .duration = 5.0,
    .warmup = 1.0,
    .hold = 5.0,
    .connect_timeout = 15.0,
    .drain = 2.0,
    .close_timeout = 1.0,
    .pubs = 1,
    .join = NULL,
    .join_acks = 1,
    .conns_msg = NULL,
    .handshakes = 128,
    .sources = 0,
};

/* ------------------------------------------------------------------ state */

/* C_SIO: upgraded, waiting for the Socket.IO connect answer (socketio dialect). */
enum cstate { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_SIO, C_JOINING, C_OPEN, C_CLOSING, C_DONE };
enum role { R_ECHO, R_SUB, R_PUB, R_CONN };
enum pstate { P_HEADER, P_PAYLOAD };

typedef struct {
    int fd;
    uint8_t state, role, pstate;
    bool deflate; /* permessage-deflate was agreed: server messages may be compressed (RSV1) */
    uint32_t events; /* the epoll interest currently registered */
    uint64_t t_start;
    char key[32];
    /* upgrade response, only while handshaking */
    char *hbuf;
    uint32_t hlen;
    /* outbound bytes not yet taken by the kernel */
    uint8_t *obuf;
    size_t olen, ooff, ocap;
    /* frame parser */
    uint8_t hdr[14];
    uint8_t hdr_have, hdr_need;
    uint8_t f_opcode, f_fin;
    uint64_t remaining;
    uint8_t msg_opcode; /* opcode of the message in progress, 0 when none */
    uint64_t msg_len;
    uint8_t cap[CAPTURE];
    uint8_t cap_len;
    uint8_t ctl[125];
    uint8_t ctl_len;
    /* send-stamp scanner (fanout) */
    uint8_t st_state;
    bool st_found;
    uint64_t st_ts;
    uint32_t st_id;
    /* echo: send times of requests in flight, oldest first */
    uint64_t *fifo;
    uint32_t f_head, f_count;
    /* fanout publisher */
    uint32_t inflight;
    uint32_t pub_id;
    uint32_t acks;
    uint64_t replies; /* measured replies / deliveries on this connection */
    /* acks: ids sent and replies received ({a} in the template) */
    uint64_t ack_sent, ack_recv;
} conn_t;

enum err {
    E_CONNECT,
    E_HANDSHAKE,
    E_TIMEOUT,
    E_CLOSED,
    E_PROTOCOL,
    E_IO,
    E_UNEXPECTED,
    E_ACK,
    E_COUNT
};
static const char *const ERR_NAMES[] = {"connect", "handshake", "timeout",   "closed_by_server",
                                        "protocol", "io",       "unexpected",       "ack_mismatch"};

enum phase { PH_RAMP, PH_RAMP_PUBS, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_HOLD, PH_CLOSE, PH_EXIT };
static const char *const PHASE_NAMES[] = {"ramp", "ramp-pubs", "warmup", "measure",
                                          "drain", "hold",     "close",  "exit"};

static conn_t *conns;
static int n_total;        /* connections of all roles */
static int epfd;
static uint64_t g_now;
static volatile sig_atomic_t g_stop, g_release;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint8_t rbuf[READ_SIZE];
static struct sockaddr_in server_addr;
static bool loopback;

static enum phase phase = PH_RAMP;
static int grp_lo, grp_hi, grp_next, grp_resolved; /* the group of connections being ramped */
static int hs_inflight;
static int n_open, n_established, n_failed, n_failed_pubs, subs_joined, pubs_joined;
static uint64_t errors[E_COUNT];
static uint64_t t_begin, t_run, t_meas_start = UINT64_MAX, t_meas_end = UINT64_MAX, t_phase_end;
static uint64_t ramp_ns;
static struct rusage ru_meas_start, ru_meas_end;
static bool meas_started, meas_ended;
static int open_at_end = -1;
static uint64_t cpu_meas_start_wall, cpu_meas_end_wall;

/* counters */
static uint64_t sent, sent_total, replies, reply_bytes, ignored, unstamped, other_pub;
static uint64_t published_window, deliveries, wire_rx, wire_tx, wire_rx_meas0, wire_tx_meas0;
static hist_t lat, lat_pub, lat_hs;

/* prebuilt messages */
static uint8_t *msg_req;
static size_t msg_req_len;
static size_t stamp_off; /* where the payload (and its stamp) starts in msg_req */
static size_t ack_at = SIZE_MAX; /* where "{a}" (the ack id) is in msg_req, SIZE_MAX when not */
static size_t ack_prefix_len;
static uint64_t acks_ok, compressed_msgs, deflate_conns;
/* --fill words: each request's payload is a window of this corpus at a random offset, so that
 * successive messages differ (as real ones do) and compression cannot just repeat the last one */
#define WORDS_CORPUS (64 * 1024)
static uint8_t *words;
static size_t words_len;
static uint8_t *msg_join;
static size_t msg_join_len;
static uint8_t *msg_conns;
static size_t msg_conns_len;

/* ------------------------------------------------------------------ helpers */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "loadgen: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (q == NULL && n > 0) die("%s", "out of memory");
    return q;
}

static double secs(uint64_t ns) { return (double)ns / 1e9; }

static double cpu_seconds(const struct rusage *ru) {
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 + (double)ru->ru_stime.tv_sec +
           (double)ru->ru_stime.tv_usec / 1e6;
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...) {
    if (cfg.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Marker lines are printed even with --quiet: the benchmark runner waits for them. */
static void marker(const char *event) {
    fprintf(stderr, "# event=%s t=%.3f open=%d established=%d failed=%d\n", event, secs(g_now - t_begin),
            n_open, n_established, n_failed);
    fflush(stderr);
}

/* Builds template with the first "{p}" replaced by size bytes of fill; *payload_at gets the offset. */
static uint8_t *build_message(const char *tmpl, long size, char fill, size_t *len, size_t *payload_at) {
    const char *hole = strstr(tmpl, "{p}");
    size_t tl = strlen(tmpl);
    if (hole == NULL) {
        uint8_t *m = xrealloc(NULL, tl + 1);
        memcpy(m, tmpl, tl);
        *len = tl;
        if (payload_at) *payload_at = 0;
        return m;
    }
    size_t pre = (size_t)(hole - tmpl), post = tl - pre - 3;
    *len = pre + (size_t)size + post;
    uint8_t *m = xrealloc(NULL, *len + 1);
    memcpy(m, tmpl, pre);
    memset(m + pre, fill, (size_t)size);
    memcpy(m + pre + (size_t)size, hole + 3, post);
    if (payload_at) *payload_at = pre;
    return m;
}

/* ------------------------------------------------------------------ epoll and output */

static void set_events(conn_t *c, uint32_t ev) {
    if (c->events == ev || c->fd < 0) return;
    struct epoll_event e = {.events = ev, .data.u64 = (uint64_t)(c - conns)};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

static void out_reserve(conn_t *c, size_t extra) {
    if (c->ooff > 0 && c->ooff == c->olen) c->ooff = c->olen = 0;
    if (c->olen + extra <= c->ocap) return;
    if (c->ooff > 0) { /* compact before growing */
        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
        if (c->olen + extra <= c->ocap) return;
    }
    size_t cap = c->ocap ? c->ocap : 256;
    while (cap < c->olen + extra) cap *= 2;
    c->obuf = xrealloc(c->obuf, cap);
    c->ocap = cap;
}

/* Masks src[0..n) into dst with key, starting at key byte phase (0..3). */
static void mask_into(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], size_t phase) {
    uint8_t k[4];
    for (int i = 0; i < 4; i++) k[i] = key[(phase + (size_t)i) & 3];
    uint64_t key64;
    memcpy(&key64, k, 4);
    memcpy((uint8_t *)&key64 + 4, k, 4);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= key64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ k[i & 3];
}

/* Appends one masked client frame (fin set) whose payload is the concatenation of iov[0..cnt):
 * straight into the connection's output buffer, no intermediate copy, no allocation once the
 * buffer has grown to its working size. */
static void append_frame_v(conn_t *c, int opcode, const struct iovec *iov, int cnt) {
    size_t len = 0;
    for (int k = 0; k < cnt; k++) len += iov[k].iov_len;
    out_reserve(c, len + 14);
    uint8_t *p = c->obuf + c->olen;
    *p++ = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        *p++ = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        *p++ = 0x80 | 126;
        *p++ = (uint8_t)(len >> 8);
        *p++ = (uint8_t)len;
    } else {
        *p++ = 0x80 | 127;
        for (int i = 7; i >= 0; i--) *p++ = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t key32 = (uint32_t)rng_next();
    uint8_t key[4];
    memcpy(key, &key32, 4);
    memcpy(p, key, 4);
    p += 4;
    size_t off = 0;
    for (int k = 0; k < cnt; k++) {
        mask_into(p + off, iov[k].iov_base, iov[k].iov_len, key, off & 3);
        off += iov[k].iov_len;
    }
    c->olen = (size_t)(p - c->obuf) + len;
}

/* Appends one masked client frame (fin set) carrying payload[0..len). */
static void append_frame(conn_t *c, int opcode, const uint8_t *payload, size_t len) {
    struct iovec one = {.iov_base = (void *)payload, .iov_len = len};
    append_frame_v(c, opcode, &one, 1);
}

static void conn_fail(conn_t *c, enum err why);

/* Writes what is pending; returns false when the connection failed. */
static bool flush(conn_t *c) {
    while (c->ooff < c->olen) {
        ssize_t n = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
        if (n > 0) {
            c->ooff += (size_t)n;
            wire_tx += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return true;
        }
        if (n < 0 && errno == EINTR) continue;
        conn_fail(c, E_IO);
        return false;
    }
    c->ooff = c->olen = 0;
    if (c->state != C_CONNECTING) set_events(c, EPOLLIN);
    return true;
}

/* ------------------------------------------------------------------ connection lifecycle */

static bool in_group(const conn_t *c) {
    int i = (int)(c - conns);
    return i >= grp_lo && i < grp_hi;
}

static void release(conn_t *c) {
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
    }
    free(c->hbuf);
    c->hbuf = NULL;
    free(c->obuf);
    c->obuf = NULL;
    c->olen = c->ooff = c->ocap = 0;
    free(c->fifo);
    c->fifo = NULL;
}

/* The connection is gone: counts it once, according to where it was. */
static void conn_fail(conn_t *c, enum err why) {
    uint8_t st = c->state;
    if (st == C_DONE || st == C_IDLE) return;
    if (st == C_CONNECTING || st == C_HANDSHAKE || st == C_SIO || st == C_JOINING) {
        if (st == C_CONNECTING || st == C_HANDSHAKE) hs_inflight--;
        else n_open--;
        n_failed++;
        if (c->role == R_PUB) n_failed_pubs++;
        if (in_group(c)) grp_resolved++;
        errors[why]++;
    } else {
        n_open--;
        if (st == C_OPEN && phase < PH_CLOSE) errors[why]++;
    }
    c->state = C_DONE;
    release(c);
}

static void start_connect(conn_t *c) {
    int i = (int)(c - conns);
    c->t_start = g_now;
    c->state = C_CONNECTING;
    hs_inflight++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->fd = -1;
        conn_fail(c, E_CONNECT);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg.sources > 1 && loopback) {
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
        src.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(i % cfg.sources));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            conn_fail(c, E_CONNECT);
            return;
        }
    }
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 && errno != EINPROGRESS) {
        conn_fail(c, E_CONNECT);
        return;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        conn_fail(c, E_CONNECT);
        return;
    }
    c->events = EPOLLOUT;
}

static void send_upgrade(conn_t *c) {
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next();
        memcpy(nonce + i, &r, 8);
    }
    base64_encode(nonce, 16, c->key);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s"
                     "User-Agent: nanosocket-loadgen/" LOADGEN_VERSION "\r\n\r\n",
                     cfg.path, cfg.host, cfg.port, c->key,
                     cfg.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    out_reserve(c, (size_t)n);
    memcpy(c->obuf + c->olen, req, (size_t)n);
    c->olen += (size_t)n;
    c->state = C_HANDSHAKE;
    set_events(c, EPOLLIN);
    flush(c);
}

static void echo_send(conn_t *c);
static void pub_send(conn_t *c);
static bool feed(conn_t *c, const uint8_t *data, size_t n);

/* A subscriber or publisher has its join acks (or needs none). */
static void joined(conn_t *c) {
    c->state = C_OPEN;
    if (c->role == R_SUB) subs_joined++;
    else pubs_joined++;
    if (in_group(c)) grp_resolved++;
}

/* The connection is usable (upgraded and, for Socket.IO, connected): join, or start. */
static void connected(conn_t *c) {
    if (c->role == R_SUB || c->role == R_PUB) {
        c->state = C_JOINING;
        c->acks = 0;
        if (msg_join != NULL) append_frame(c, cfg.binary ? 2 : 1, msg_join, msg_join_len);
        if (cfg.join_acks == 0 || msg_join == NULL) joined(c);
    } else {
        c->state = C_OPEN;
        if (c->role == R_ECHO) c->fifo = xrealloc(NULL, sizeof(uint64_t) * (size_t)cfg.window);
        if (in_group(c)) grp_resolved++;
    }
}

/* The upgrade succeeded. */
static void opened(conn_t *c) {
    hs_inflight--;
    n_open++;
    n_established++;
    hist_add(&lat_hs, g_now - c->t_start);
    free(c->hbuf);
    c->hbuf = NULL;
    c->hlen = 0;
    c->pstate = P_HEADER;
    c->hdr_have = 0;
    c->hdr_need = 2;
    if (cfg.dialect == D_SOCKETIO) { /* connect to the main namespace, wait for its answer */
        c->state = C_SIO;
        append_frame(c, 1, (const uint8_t *)"40", 2);
        return;
    }
    connected(c);
}

/* Reads the upgrade response; frames that follow it in the same read are fed to the parser. */
static void handshake_data(conn_t *c, const uint8_t *data, size_t n) {
    size_t room = MAX_HANDSHAKE - c->hlen;
    size_t take = n < room ? n : room;
    if (c->hbuf == NULL) c->hbuf = xrealloc(NULL, MAX_HANDSHAKE + 1);
    memcpy(c->hbuf + c->hlen, data, take);
    c->hlen += (uint32_t)take;
    c->hbuf[c->hlen] = '\0';
    char *end = strstr(c->hbuf, "\r\n\r\n");
    if (end == NULL) {
        if (c->hlen >= MAX_HANDSHAKE) conn_fail(c, E_HANDSHAKE);
        return;
    }
    size_t head_len = (size_t)(end - c->hbuf) + 4;
    if (strncmp(c->hbuf, "HTTP/1.1 101", 12) != 0) {
        conn_fail(c, E_HANDSHAKE);
        return;
    }
    /* expected accept value */
    char keyguid[64];
    int kl = snprintf(keyguid, sizeof keyguid, "%s%s", c->key, WS_GUID);
    uint8_t digest[20];
    sha1((const uint8_t *)keyguid, (size_t)kl, digest);
    char accept[32];
    base64_encode(digest, 20, accept);
    bool ok = false;
    *end = '\0';
    for (char *line = strstr(c->hbuf, "\r\n"); line != NULL; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "sec-websocket-accept:", 21) == 0) {
            char *v = line + 21;
            while (*v == ' ' || *v == '\t') v++;
            size_t al = strlen(accept);
            ok = strncmp(v, accept, al) == 0 && (v[al] == '\r' || v[al] == '\0' || v[al] == ' ');
        } else if (strncasecmp(line, "sec-websocket-extensions:", 25) == 0) {
            char *eol = strstr(line, "\r\n");
            size_t ll = eol ? (size_t)(eol - line) : strlen(line);
            if (!cfg.deflate || memmem(line, ll, "permessage-deflate", 18) == NULL) {
                conn_fail(c, E_HANDSHAKE); /* an extension we did not offer */
                return;
            }
            c->deflate = true;
            deflate_conns++;
        }
    }
    if (!ok) {
        conn_fail(c, E_HANDSHAKE);
        return;
    }
    size_t trailing = c->hlen - head_len;
    uint8_t extra[MAX_HANDSHAKE];
    memcpy(extra, c->hbuf + head_len, trailing);
    /* bytes of this read beyond what fitted into hbuf */
    opened(c);
    if (trailing > 0 && !feed(c, extra, trailing)) return;
    if (take < n) feed(c, data + take, n - take);
}

/* ------------------------------------------------------------------ messages */

static int hexval(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Streams message bytes through the "@@" + 16 + 8 hex digit stamp matcher. */
static void scan_stamp(conn_t *c, const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n && !c->st_found) {
        if (c->st_state == 0) {
            const uint8_t *at = memchr(p + i, '@', n - i);
            if (at == NULL) return;
            i = (size_t)(at - p) + 1;
            c->st_state = 1;
            continue;
        }
        uint8_t ch = p[i++];
        if (c->st_state == 1) {
            c->st_state = ch == '@' ? 2 : 0;
            c->st_ts = 0;
            c->st_id = 0;
            continue;
        }
        int v = hexval(ch);
        if (v < 0) {
            c->st_state = ch == '@' ? 1 : 0;
            continue;
        }
        if (c->st_state < 18) c->st_ts = (c->st_ts << 4) | (uint64_t)v;
        else c->st_id = (c->st_id << 4) | (uint32_t)v;
        if (++c->st_state == STAMP_LEN) c->st_found = true;
    }
}

static bool measuring_time(uint64_t t) { return t >= t_meas_start && t < t_meas_end; }

/* Socket.IO protocol chatter (socketio dialect). Returns true when the message was chatter, not
 * an event or an ack for the scenario. */
static bool socketio_packet(conn_t *c) {
    uint8_t t = c->cap_len > 0 ? c->cap[0] : 0;
    if (t == '4' && c->cap_len >= 2 && (c->cap[1] == '2' || c->cap[1] == '3')) return false; /* EVENT, ACK */
    ignored++;
    if (t == '2') { /* Engine.IO ping: pong with the same payload ("2probe" -> "3probe") */
        if (c->state != C_CLOSING) {
            uint8_t pong[CAPTURE];
            memcpy(pong, c->cap, c->cap_len);
            pong[0] = '3';
            append_frame(c, 1, pong, c->msg_len <= CAPTURE ? c->msg_len : 1);
        }
    } else if (t == '4' && c->cap_len >= 2 && c->cap[1] == '0') { /* CONNECT answered */
        if (c->state == C_SIO) connected(c);
    } else if (t == '4' && c->cap_len >= 2 && c->cap[1] == '4') { /* CONNECT_ERROR: refused */
        if (c->state == C_SIO) conn_fail(c, E_HANDSHAKE);
        else errors[E_PROTOCOL]++;
    } else if (t == '1' || (t == '4' && c->cap_len >= 2 && c->cap[1] == '1')) { /* close / DISCONNECT */
        if (c->state == C_SIO || c->state == C_JOINING) conn_fail(c, E_CLOSED);
        else if (phase < PH_CLOSE) errors[E_CLOSED]++;
    } else if (t != '0' && t != '3' && t != '6') { /* not open, pong or noop */
        errors[E_UNEXPECTED]++;
    }
    return true;
}

/* An ack reply must be the ack prefix and the id of the oldest request in flight. */
static bool ack_matches(conn_t *c) {
    uint64_t want = ++c->ack_recv;
    if (c->msg_len < ack_prefix_len || memcmp(c->cap, cfg.ack_prefix, ack_prefix_len) != 0) return false;
    uint64_t id = 0;
    size_t i = ack_prefix_len, digits = 0;
    while (i < c->cap_len && c->cap[i] == ' ') i++;
    for (; i < c->cap_len && c->cap[i] >= '0' && c->cap[i] <= '9' && digits < 19; i++, digits++)
        id = id * 10 + (uint64_t)(c->cap[i] - '0');
    return digits > 0 && id == want;
}

/* One complete data message arrived on c. */
static void message_done(conn_t *c) {
    if (cfg.dialect == D_SOCKETIO && socketio_packet(c)) return;
    for (int k = 0; k < cfg.n_ignore; k++) {
        size_t pl = cfg.ignore_len[k];
        if (c->msg_len >= pl && memcmp(c->cap, cfg.ignore[k], pl) == 0) {
            ignored++;
            if (cfg.ignore_answer != NULL && c->state != C_CLOSING)
                append_frame(c, 1, (const uint8_t *)cfg.ignore_answer, strlen(cfg.ignore_answer));
            return;
        }
    }
    if (c->state == C_JOINING) {
        if (++c->acks >= (uint32_t)cfg.join_acks) joined(c);
        return;
    }
    if (c->state != C_OPEN) return;
    switch (c->role) {
    case R_ECHO: {
        uint64_t sent_at = 0;
        bool have = c->f_count > 0;
        if (have) {
            sent_at = c->fifo[c->f_head];
            c->f_head = (c->f_head + 1) % (uint32_t)cfg.window;
            c->f_count--;
        } else {
            errors[E_UNEXPECTED]++;
        }
        if (cfg.ack_prefix != NULL) {
            if (ack_matches(c)) acks_ok++;
            else errors[E_ACK]++;
        }
        if (measuring_time(g_now)) {
            replies++;
            c->replies++;
            reply_bytes += c->msg_len;
            if (have) hist_add(&lat, g_now - sent_at);
        }
        if (have && g_now < t_meas_end && phase <= PH_MEASURE && !g_stop) echo_send(c);
        break;
    }
    case R_SUB:
        if (!c->st_found || c->st_ts > g_now) {
            unstamped++;
        } else if (measuring_time(c->st_ts)) {
            deliveries++;
            c->replies++;
            reply_bytes += c->msg_len;
            hist_add(&lat, g_now - c->st_ts);
        }
        break;
    case R_PUB:
        if (c->st_found && c->st_id == c->pub_id) {
            if (c->inflight > 0) c->inflight--;
            if (measuring_time(c->st_ts)) hist_add(&lat_pub, g_now - c->st_ts);
            if (g_now < t_meas_end && phase <= PH_MEASURE && !g_stop) pub_send(c);
        } else if (c->st_found) {
            other_pub++;
        } else {
            unstamped++;
        }
        break;
    case R_CONN:
        replies++;
        c->replies++;
        reply_bytes += c->msg_len;
        break;
    default:
        break;
    }
}

static void begin_close(conn_t *c) {
    static const uint8_t bye[2] = {0x03, 0xE8}; /* 1000 */
    if (c->state != C_OPEN && c->state != C_JOINING && c->state != C_SIO) return;
    append_frame(c, 8, bye, 2);
    c->state = C_CLOSING;
    flush(c);
}

/* A control frame is complete. Returns false when the connection is finished. */
static bool control_done(conn_t *c) {
    if (c->f_opcode == 0x9) { /* ping -> pong with the same payload */
        if (c->state != C_CLOSING) append_frame(c, 0xA, c->ctl, c->ctl_len);
        return true;
    }
    if (c->f_opcode == 0xA) return true;
    /* close */
    if (c->state == C_CLOSING) return true; /* our close was answered: wait for the server's FIN */
    if (c->state == C_JOINING || c->state == C_SIO) { /* refused while joining: a failed connection */
        conn_fail(c, E_CLOSED);
        return false;
    }
    if (phase < PH_CLOSE) errors[E_CLOSED]++;
    uint8_t code[2] = {0x03, 0xE8};
    if (c->ctl_len >= 2) memcpy(code, c->ctl, 2);
    append_frame(c, 8, code, c->ctl_len >= 2 ? 2 : 0);
    c->state = C_CLOSING;
    return true;
}

static bool protocol_error(conn_t *c) {
    conn_fail(c, E_PROTOCOL);
    return false;
}

/* Streams bytes from the server through the frame parser. Returns false when c is finished. */
static bool feed(conn_t *c, const uint8_t *data, size_t n) {
    wire_rx += n;
    while (n > 0) {
        if (c->pstate == P_HEADER) {
            size_t take = c->hdr_need - c->hdr_have;
            if (take > n) take = n;
            memcpy(c->hdr + c->hdr_have, data, take);
            c->hdr_have += (uint8_t)take;
            data += take;
            n -= take;
            if (c->hdr_have < c->hdr_need) continue;
            if (c->hdr_need == 2) {
                uint8_t l7 = c->hdr[1] & 0x7F;
                uint8_t need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
                if (need > 2) {
                    c->hdr_need = need;
                    continue;
                }
            }
            uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
            uint64_t len = b1 & 0x7F;
            if (len == 126) {
                len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            } else if (len == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i];
                if (len >> 63) return protocol_error(c);
            }
            c->hdr_have = 0;
            c->hdr_need = 2;
            if (b1 & 0x80) return protocol_error(c); /* servers must not mask */
            /* RSV1 marks a compressed message (its first frame) once permessage-deflate is agreed; the
             * payload is counted as it came, compressed, and never inflated */
            bool rsv1 = (b0 & 0x40) && c->deflate && c->msg_opcode == 0 && ((b0 & 0x0F) == 1 || (b0 & 0x0F) == 2);
            if ((b0 & 0x70) && !rsv1) return protocol_error(c);
            if (rsv1) compressed_msgs++;
            c->f_opcode = b0 & 0x0F;
            c->f_fin = (b0 & 0x80) != 0;
            c->remaining = len;
            if (c->f_opcode >= 0x8) {
                if (c->f_opcode > 0xA || !c->f_fin || len > 125) return protocol_error(c);
                c->ctl_len = 0;
            } else if (c->f_opcode == 0) {
                if (c->msg_opcode == 0) return protocol_error(c);
            } else if (c->f_opcode <= 2) {
                if (c->msg_opcode != 0) return protocol_error(c);
                c->msg_opcode = c->f_opcode;
                c->msg_len = 0;
                c->cap_len = 0;
                c->st_state = 0;
                c->st_found = false;
            } else {
                return protocol_error(c);
            }
            c->pstate = P_PAYLOAD;
        } else {
            size_t take = c->remaining < n ? (size_t)c->remaining : n;
            if (c->f_opcode >= 0x8) {
                memcpy(c->ctl + c->ctl_len, data, take);
                c->ctl_len += (uint8_t)take;
            } else {
                if (c->cap_len < CAPTURE) {
                    size_t room = (size_t)CAPTURE - c->cap_len;
                    size_t k = room < take ? room : take;
                    memcpy(c->cap + c->cap_len, data, k);
                    c->cap_len += (uint8_t)k;
                }
                if (cfg.mode == MODE_FANOUT && !c->st_found) scan_stamp(c, data, take);
                c->msg_len += take;
            }
            c->remaining -= take;
            data += take;
            n -= take;
        }
        if (c->pstate == P_PAYLOAD && c->remaining == 0) {
            c->pstate = P_HEADER;
            if (c->f_opcode >= 0x8) {
                if (!control_done(c)) return false;
            } else if (c->f_fin) {
                message_done(c);
                c->msg_opcode = 0;
            }
            if (c->state == C_DONE) return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------ senders */

/* The request frame; with "{a}" in the template, numbered with the connection's next ack id. */
static void append_request(conn_t *c) {
    if (words != NULL && cfg.mode != MODE_FANOUT)
        memcpy(msg_req + stamp_off, words + rng_next() % WORDS_CORPUS, (size_t)cfg.size);
    if (ack_at == SIZE_MAX) {
        append_frame(c, cfg.binary ? 2 : 1, msg_req, msg_req_len);
        return;
    }
    char digits[24];
    int nd = snprintf(digits, sizeof digits, "%" PRIu64, ++c->ack_sent);
    struct iovec iov[3] = {
        {.iov_base = msg_req, .iov_len = ack_at},
        {.iov_base = digits, .iov_len = (size_t)nd},
        {.iov_base = msg_req + ack_at + 3, .iov_len = msg_req_len - ack_at - 3},
    };
    append_frame_v(c, cfg.binary ? 2 : 1, iov, 3);
}

static void echo_send(conn_t *c) {
    if (c->f_count >= (uint32_t)cfg.window) return;
    append_request(c);
    c->fifo[(c->f_head + c->f_count) % (uint32_t)cfg.window] = g_now;
    c->f_count++;
    sent_total++;
    if (measuring_time(g_now)) sent++;
}

static void write_hex(uint8_t *p, uint64_t v, int digits) {
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) {
        p[i] = (uint8_t)hex[v & 15];
        v >>= 4;
    }
}

static void pub_send(conn_t *c) {
    if (c->inflight >= (uint32_t)cfg.window) return;
    uint8_t *s = msg_req + stamp_off;
    s[0] = '@';
    s[1] = '@';
    write_hex(s + 2, g_now, 16);
    write_hex(s + 18, c->pub_id, 8);
    append_request(c);
    c->inflight++;
    sent_total++;
    if (measuring_time(g_now)) {
        sent++;
        published_window++;
    }
}

/* ------------------------------------------------------------------ events */

static void on_event(conn_t *c, uint32_t ev) {
    if (c->state == C_DONE || c->fd < 0) return;
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0 ||
            (ev & (EPOLLERR | EPOLLHUP))) {
            conn_fail(c, E_CONNECT);
            return;
        }
        send_upgrade(c);
        return;
    }
    if ((ev & EPOLLOUT) && !flush(c)) return;
    if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (n > 0) {
        g_now = mono_ns(); /* the receive time of what this read returned */
        if (c->state == C_HANDSHAKE) {
            handshake_data(c, rbuf, (size_t)n);
        } else if (!feed(c, rbuf, (size_t)n)) {
            return;
        }
        if (c->state != C_DONE && c->olen > c->ooff) flush(c);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    /* EOF or a reset */
    if (c->state == C_CLOSING) {
        n_open--;
        c->state = C_DONE;
        release(c);
        return;
    }
    conn_fail(c, c->state == C_HANDSHAKE ? E_HANDSHAKE : (n == 0 ? E_CLOSED : E_IO));
}

static void sweep_timeouts(void) {
    uint64_t limit = (uint64_t)(cfg.connect_timeout * 1e9);
    for (int i = grp_lo; i < grp_hi; i++) {
        conn_t *c = &conns[i];
        if ((c->state == C_CONNECTING || c->state == C_HANDSHAKE || c->state == C_SIO || c->state == C_JOINING) &&
            g_now - c->t_start > limit)
            conn_fail(c, E_TIMEOUT);
    }
}

static void set_group(int lo, int hi) {
    grp_lo = lo;
    grp_hi = hi;
    grp_next = lo;
    grp_resolved = 0;
}

static void start_run(void) {
    t_run = g_now;
    ramp_ns = g_now - t_begin;
    t_meas_start = t_run + (uint64_t)(cfg.warmup * 1e9);
    t_meas_end = t_meas_start + (uint64_t)(cfg.duration * 1e9);
    phase = PH_WARMUP;
    marker("warmup-start");
    for (int i = 0; i < n_total; i++) {
        conn_t *c = &conns[i];
        if (c->state != C_OPEN) continue;
        if (c->role == R_ECHO) {
            for (int k = 0; k < cfg.window; k++) echo_send(c);
        } else if (c->role == R_PUB) {
            for (int k = 0; k < cfg.window; k++) pub_send(c);
        } else {
            continue;
        }
        flush(c);
    }
}

static void enter_close(void) {
    phase = PH_CLOSE;
    t_phase_end = g_now + (uint64_t)(cfg.close_timeout * 1e9);
    for (int i = 0; i < n_total; i++) {
        conn_t *c = &conns[i];
        if (c->state == C_OPEN || c->state == C_JOINING || c->state == C_SIO) begin_close(c);
        else if (c->state == C_CONNECTING || c->state == C_HANDSHAKE) conn_fail(c, E_TIMEOUT);
    }
}

static bool fanout_drained(void) {
    for (int i = cfg.conns; i < n_total; i++)
        if (conns[i].state == C_OPEN && conns[i].inflight > 0) return false;
    return deliveries >= published_window * (uint64_t)subs_joined;
}

/* Moves between phases; called after every epoll_wait. */
static void advance(void) {
    if (g_stop && phase < PH_CLOSE) {
        if (!meas_ended && meas_started) {
            getrusage(RUSAGE_SELF, &ru_meas_end);
            cpu_meas_end_wall = g_now;
            meas_ended = true;
            t_meas_end = g_now;
        }
        enter_close();
    }
    switch (phase) {
    case PH_RAMP:
    case PH_RAMP_PUBS: {
        bool done = grp_resolved >= grp_hi - grp_lo;
        if (!done) break;
        if (cfg.mode == MODE_FANOUT && phase == PH_RAMP) {
            progress("# subscribers joined: %d of %d", subs_joined, cfg.conns);
            phase = PH_RAMP_PUBS;
            set_group(cfg.conns, n_total);
            break;
        }
        if (cfg.mode == MODE_CONNS) {
            ramp_ns = g_now - t_begin;
            if (msg_conns != NULL)
                for (int i = 0; i < n_total; i++)
                    if (conns[i].state == C_OPEN) {
                        append_frame(&conns[i], cfg.binary ? 2 : 1, msg_conns, msg_conns_len);
                        sent_total++;
                        flush(&conns[i]);
                    }
            phase = PH_HOLD;
            t_phase_end = g_now + (uint64_t)(cfg.hold * 1e9);
            marker("ready");
            break;
        }
        start_run();
        break;
    }
    case PH_WARMUP:
        if (g_now >= t_meas_start) {
            getrusage(RUSAGE_SELF, &ru_meas_start);
            cpu_meas_start_wall = g_now;
            wire_rx_meas0 = wire_rx;
            wire_tx_meas0 = wire_tx;
            meas_started = true;
            phase = PH_MEASURE;
            marker("measure-start");
        }
        break;
    case PH_MEASURE:
        if (g_now >= t_meas_end) {
            getrusage(RUSAGE_SELF, &ru_meas_end);
            cpu_meas_end_wall = g_now;
            meas_ended = true;
            wire_rx_meas0 = wire_rx - wire_rx_meas0;
            wire_tx_meas0 = wire_tx - wire_tx_meas0;
            open_at_end = n_open;
            marker("measure-end");
            if (cfg.mode == MODE_FANOUT) {
                phase = PH_DRAIN;
                t_phase_end = g_now + (uint64_t)(cfg.drain * 1e9);
            } else {
                enter_close();
            }
        }
        break;
    case PH_DRAIN:
        if (g_now >= t_phase_end || fanout_drained()) enter_close();
        break;
    case PH_HOLD:
        if (g_now >= t_phase_end || g_release) {
            open_at_end = n_open;
            marker("hold-end");
            enter_close();
        }
        break;
    case PH_CLOSE:
        if (n_open <= 0 || g_now >= t_phase_end) phase = PH_EXIT;
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ report */

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static void json_hist(const char *name, const hist_t *h) {
    printf("\"%s\":{\"samples\":%" PRIu64, name, h->total);
    if (h->total > 0) {
        printf(",\"mean\":%.1f,\"min\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f",
               h->sum / (double)h->total / 1e3, (double)h->min / 1e3, (double)hist_quantile(h, 0.50) / 1e3,
               (double)hist_quantile(h, 0.90) / 1e3, (double)hist_quantile(h, 0.99) / 1e3,
               (double)hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3);
    }
    putchar('}');
}

static void report(void) {
    double measured = meas_started ? secs((meas_ended ? cpu_meas_end_wall : g_now) - cpu_meas_start_wall) : 0.0;
    double cpu_pct = 0.0;
    if (cfg.mode == MODE_CONNS) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double wall = secs(g_now - t_begin);
        cpu_pct = wall > 0 ? 100.0 * cpu_seconds(&ru) / wall : 0.0;
        measured = wall;
    } else if (meas_started && meas_ended && measured > 0) {
        cpu_pct = 100.0 * (cpu_seconds(&ru_meas_end) - cpu_seconds(&ru_meas_start)) / measured;
    }
    uint64_t err_total = 0;
    for (int i = 0; i < E_COUNT; i++) err_total += errors[i];
    uint64_t per_min = UINT64_MAX, per_max = 0;
    for (int i = 0; i < cfg.conns; i++) {
        if (conns[i].role == R_PUB) continue;
        if (conns[i].replies < per_min) per_min = conns[i].replies;
        if (conns[i].replies > per_max) per_max = conns[i].replies;
    }
    if (per_min == UINT64_MAX) per_min = 0;
    double dur = measured > 0 ? measured : 1.0;

    printf("{\"tool\":\"nanosocket-loadgen\",\"version\":" LOADGEN_VERSION ",\"mode\":\"%s\",", MODE_NAMES[cfg.mode]);
    printf("\"params\":{\"host\":");
    json_str(cfg.host);
    printf(",\"port\":%d,\"dialect\":\"%s\",\"path\":", cfg.port, DIALECT_NAMES[cfg.dialect]);
    json_str(cfg.path);
    printf(",\"conns\":%d,\"window\":%d,\"size\":%ld,\"template\":", cfg.conns, cfg.window, cfg.size);
    json_str(cfg.tmpl);
    printf(",\"binary\":%s,\"duration\":%.3f,\"warmup\":%.3f,\"hold\":%.3f,\"pubs\":%d,\"join_acks\":%d,"
           "\"handshakes\":%d,\"sources\":%d,\"join\":",
           cfg.binary ? "true" : "false", cfg.duration, cfg.warmup, cfg.hold, cfg.pubs, cfg.join_acks,
           cfg.handshakes, cfg.sources);
    if (cfg.join) json_str(cfg.join);
    else printf("null");
    printf(",\"ack_prefix\":");
    if (cfg.ack_prefix) json_str(cfg.ack_prefix);
    else printf("null");
    printf(",\"conns_msg\":");
    if (cfg.conns_msg) json_str(cfg.conns_msg);
    else printf("null");
    printf(",\"ignore_prefix\":[");
    for (int i = 0; i < cfg.n_ignore; i++) {
        if (i) putchar(',');
        json_str(cfg.ignore[i]);
    }
    printf("]},");
    printf("\"measured_s\":%.3f,\"ramp_s\":%.3f,", measured, secs(ramp_ns));
    printf("\"connections\":{\"target\":%d,\"established\":%d,\"failed\":%d,\"open_at_end\":%d},", n_total,
           n_established, n_failed, open_at_end < 0 ? n_open : open_at_end);
    printf("\"client_cpu_pct\":%.1f,", cpu_pct);
    if (cfg.mode == MODE_ECHO) {
        printf("\"sent\":%" PRIu64 ",\"replies\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"bytes_per_s\":%.1f,", sent,
               replies, (double)replies / dur, (double)reply_bytes / dur);
        if (cfg.ack_prefix != NULL) printf("\"acks_ok\":%" PRIu64 ",", acks_ok);
        if (cfg.deflate)
            printf("\"deflate_connections\":%" PRIu64 ",\"compressed_messages\":%" PRIu64 ",", deflate_conns,
                   compressed_msgs);
    } else if (cfg.mode == MODE_FANOUT) {
        uint64_t expected = published_window * (uint64_t)subs_joined;
        printf("\"subscribers_joined\":%d,\"publishers_joined\":%d,\"publishes\":%" PRIu64
               ",\"publishes_per_s\":%.1f,\"deliveries\":%" PRIu64 ",\"expected\":%" PRIu64
               ",\"delivery_ratio\":%.4f,\"deliveries_per_s\":%.1f,\"bytes_per_s\":%.1f,\"replies\":%" PRIu64
               ",\"unstamped\":%" PRIu64 ",\"other_publishers\":%" PRIu64 ",",
               subs_joined, pubs_joined, published_window, (double)published_window / dur, deliveries, expected,
               expected ? (double)deliveries / (double)expected : 0.0, (double)deliveries / dur,
               (double)reply_bytes / dur, deliveries, unstamped, other_pub);
        json_hist("publisher_rtt_us", &lat_pub);
        putchar(',');
    } else {
        printf("\"sent\":%" PRIu64 ",\"replies\":%" PRIu64 ",", sent_total, replies);
    }
    printf("\"ignored\":%" PRIu64 ",\"per_conn_min\":%" PRIu64 ",\"per_conn_max\":%" PRIu64 ",", ignored, per_min,
           per_max);
    printf("\"wire_rx_bytes_per_s\":%.1f,\"wire_tx_bytes_per_s\":%.1f,",
           cfg.mode == MODE_CONNS ? 0.0 : (double)wire_rx_meas0 / dur,
           cfg.mode == MODE_CONNS ? 0.0 : (double)wire_tx_meas0 / dur);
    json_hist("latency_us", cfg.mode == MODE_CONNS ? &lat_hs : &lat);
    putchar(',');
    json_hist("handshake_us", &lat_hs);
    printf(",\"errors\":{");
    for (int i = 0; i < E_COUNT; i++) printf("\"%s\":%" PRIu64 ",", ERR_NAMES[i], errors[i]);
    printf("\"total\":%" PRIu64 "},\"interrupted\":%s}\n", err_total, g_stop ? "true" : "false");
    fflush(stdout);
}

/* ------------------------------------------------------------------ command line */

static void usage(FILE *to) {
    fprintf(to,
            "usage: loadgen --mode echo|fanout|conns --port P [options]\n"
            "\n"
            "common:\n"
            "  --host H              server address (default 127.0.0.1)\n"
            "  --port P              server port (required)\n"
            "  --path /P             request path (default /; socketio: " SIO_PATH ")\n"
            "      --dialect D       plain (default) or socketio: Engine.IO v4 / Socket.IO v5 packets\n"
            "                        (connect \"40\" after the upgrade, pings \"2\" answered \"3\"); the\n"
            "                        templates carry the 42[...] framing, e.g. '42[\"echo\",\"{p}\"]'\n"
            "  -c, --conns N         echo: connections; fanout: subscribers; conns: connections (default 50)\n"
            "  -d, --duration S      measured seconds (default 5)\n"
            "      --warmup S        unmeasured seconds before (default 1)\n"
            "  -s, --size N          payload bytes replacing {p} in the template (default 100)\n"
            "  -t, --template T      message template, {p} is the payload (default \"{p}\"), {a} an ack id\n"
            "                        numbered 1, 2, 3... per connection\n"
            "      --binary          send binary frames instead of text\n"
            "      --fill words      fill {p} with pseudo-random lowercase words (compressible like text)\n"
            "                        instead of 'x' repeated\n"
            "      --deflate         offer permessage-deflate; compressed server messages are counted as\n"
            "                        received (not inflated); requests are sent uncompressed\n"
            "      --handshakes N    most connections in TCP connect or upgrade at once (default 128)\n"
            "      --sources K       spread source addresses over 127.0.0.1..K (default: automatic)\n"
            "      --connect-timeout S  seconds one connection has to connect, upgrade and join (default 15)\n"
            "      --close-timeout S seconds to wait for closing handshakes at the end (default 1)\n"
            "      --ignore-prefix X messages starting with X are not counted (repeatable, up to 8)\n"
            "      --ignore-answer A text frame sent back for each ignored message\n"
            "  -q, --quiet           no progress lines (event markers are still printed)\n"
            "      --selftest        check SHA-1, base64 and the histogram, then exit\n"
            "echo:\n"
            "  -w, --window W        requests in flight per connection (default 1)\n"
            "      --ack-prefix X    each reply must be X then the ack id of the oldest request in flight\n"
            "                        (e.g. '{\"ack\":' or '43'); mismatches are ack_mismatch errors\n"
            "fanout:\n"
            "      --pubs P          publishers (default 1); -w is publishes in flight per publisher\n"
            "      --join T          frame each subscriber and publisher sends first\n"
            "      --join-ack J      data frames to wait for after the join (default 1)\n"
            "      --drain S         seconds to wait for deliveries after the run (default 2)\n"
            "conns:\n"
            "      --hold S          seconds to hold the connections (default 5; SIGUSR1 ends it early)\n"
            "      --conns-msg T     frame sent once on each connection when all are open\n");
}

static double parse_num(const char *opt, const char *v, double lo, double hi) {
    char *end;
    double d = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(d >= lo && d <= hi)) {
        fprintf(stderr, "loadgen: %s must be a number in [%g, %g], got '%s'\n", opt, lo, hi, v);
        exit(2);
    }
    return d;
}

static int selftest(void) {
    int failures = 0;
    char key[] = "dGhlIHNhbXBsZSBub25jZQ==" WS_GUID;
    uint8_t d[20];
    char out[32];
    sha1((const uint8_t *)key, strlen(key), d);
    base64_encode(d, 20, out);
    if (strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) {
        fprintf(stderr, "selftest: accept key %s\n", out);
        failures++;
    }
    sha1((const uint8_t *)"abc", 3, d);
    base64_encode(d, 20, out);
    if (strcmp(out, "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=") != 0) {
        fprintf(stderr, "selftest: sha1(abc) %s\n", out);
        failures++;
    }
    static hist_t h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 100000; v++) hist_add(&h, v * 1000);
    double p50 = (double)hist_quantile(&h, 0.5), p99 = (double)hist_quantile(&h, 0.99);
    if (p50 < 49e6 || p50 > 51e6 || p99 < 97.5e6 || p99 > 100.5e6) {
        fprintf(stderr, "selftest: histogram p50 %.0f p99 %.0f\n", p50, p99);
        failures++;
    }
    printf("{\"selftest\":%s}\n", failures ? "false" : "true");
    return failures ? 1 : 0;
}

static void on_signal(int sig) {
    if (sig == SIGUSR1) g_release = 1; /* end the hold of conns mode early, normally */
    else g_stop = 1;
}

static void parse_args(int argc, char **argv) {
    enum {
        O_WARMUP = 256, O_BINARY, O_HANDSHAKES, O_SOURCES, O_CTIMEOUT, O_CLTIMEOUT, O_IGNORE, O_IGNANS,
        O_PUBS, O_JOIN, O_JOINACK, O_DRAIN, O_HOLD, O_CMSG, O_HOST, O_PORT, O_PATH, O_MODE, O_SELFTEST,
        O_DIALECT, O_ACKPREFIX, O_FILL, O_DEFLATE
    };
    static const struct option longs[] = {
        {"mode", required_argument, 0, O_MODE},        {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT},        {"path", required_argument, 0, O_PATH},
        {"conns", required_argument, 0, 'c'},          {"window", required_argument, 0, 'w'},
        {"size", required_argument, 0, 's'},           {"template", required_argument, 0, 't'},
        {"duration", required_argument, 0, 'd'},       {"warmup", required_argument, 0, O_WARMUP},
        {"binary", no_argument, 0, O_BINARY},          {"handshakes", required_argument, 0, O_HANDSHAKES},
        {"sources", required_argument, 0, O_SOURCES},  {"connect-timeout", required_argument, 0, O_CTIMEOUT},
        {"close-timeout", required_argument, 0, O_CLTIMEOUT},
        {"ignore-prefix", required_argument, 0, O_IGNORE},
        {"ignore-answer", required_argument, 0, O_IGNANS},
        {"pubs", required_argument, 0, O_PUBS},        {"join", required_argument, 0, O_JOIN},
        {"join-ack", required_argument, 0, O_JOINACK}, {"drain", required_argument, 0, O_DRAIN},
        {"hold", required_argument, 0, O_HOLD},        {"conns-msg", required_argument, 0, O_CMSG},
        {"quiet", no_argument, 0, 'q'},                {"selftest", no_argument, 0, O_SELFTEST},
        {"help", no_argument, 0, 'h'},                 {"dialect", required_argument, 0, O_DIALECT},
        {"ack-prefix", required_argument, 0, O_ACKPREFIX}, {"fill", required_argument, 0, O_FILL},
        {"deflate", no_argument, 0, O_DEFLATE},        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:w:s:t:d:qh", longs, NULL)) != -1) {
        switch (opt) {
        case O_MODE:
            if (strcmp(optarg, "echo") == 0) cfg.mode = MODE_ECHO;
            else if (strcmp(optarg, "fanout") == 0) cfg.mode = MODE_FANOUT;
            else if (strcmp(optarg, "conns") == 0) cfg.mode = MODE_CONNS;
            else die("unknown mode '%s' (echo, fanout or conns)", optarg);
            break;
        case O_HOST: cfg.host = optarg; break;
        case O_PORT: cfg.port = (int)parse_num("--port", optarg, 1, 65535); break;
        case O_PATH: cfg.path = optarg; break;
        case O_DIALECT:
            if (strcmp(optarg, "plain") == 0) cfg.dialect = D_PLAIN;
            else if (strcmp(optarg, "socketio") == 0) cfg.dialect = D_SOCKETIO;
            else die("unknown dialect '%s' (plain or socketio)", optarg);
            break;
        case O_FILL:
            if (strcmp(optarg, "words") == 0) cfg.words = true;
            else if (strcmp(optarg, "x") != 0) die("unknown --fill '%s' (x or words)", optarg);
            break;
        case O_DEFLATE: cfg.deflate = true; break;
        case O_ACKPREFIX:
            if (strlen(optarg) == 0 || strlen(optarg) > 40) die("--ack-prefix '%s' must be 1-40 bytes", optarg);
            cfg.ack_prefix = optarg;
            break;
        case 'c': cfg.conns = (int)parse_num("--conns", optarg, 1, 100000); break;
        case 'w': cfg.window = (int)parse_num("--window", optarg, 1, 4096); break;
        case 's': cfg.size = (long)parse_num("--size", optarg, 0, 64 * 1024 * 1024); break;
        case 't': cfg.tmpl = optarg; break;
        case 'd': cfg.duration = parse_num("--duration", optarg, 0.05, 3600); break;
        case O_WARMUP: cfg.warmup = parse_num("--warmup", optarg, 0, 600); break;
        case O_BINARY: cfg.binary = true; break;
        case O_HANDSHAKES: cfg.handshakes = (int)parse_num("--handshakes", optarg, 1, 10000); break;
        case O_SOURCES: cfg.sources = (int)parse_num("--sources", optarg, 1, 250); break;
        case O_CTIMEOUT: cfg.connect_timeout = parse_num("--connect-timeout", optarg, 0.1, 600); break;
        case O_CLTIMEOUT: cfg.close_timeout = parse_num("--close-timeout", optarg, 0, 60); break;
        case O_IGNORE:
            if (cfg.n_ignore >= MAX_IGNORE) die("%s", "at most 8 --ignore-prefix options");
            if (strlen(optarg) == 0 || strlen(optarg) > CAPTURE) die("--ignore-prefix '%s' must be 1-64 bytes", optarg);
            cfg.ignore_len[cfg.n_ignore] = strlen(optarg);
            cfg.ignore[cfg.n_ignore++] = optarg;
            break;
        case O_IGNANS: cfg.ignore_answer = optarg; break;
        case O_PUBS: cfg.pubs = (int)parse_num("--pubs", optarg, 1, 10000); break;
        case O_JOIN: cfg.join = optarg; break;
        case O_JOINACK: cfg.join_acks = (int)parse_num("--join-ack", optarg, 0, 1000); break;
        case O_DRAIN: cfg.drain = parse_num("--drain", optarg, 0, 600); break;
        case O_HOLD: cfg.hold = parse_num("--hold", optarg, 0, 3600); break;
        case O_CMSG: cfg.conns_msg = optarg; break;
        case 'q': cfg.quiet = true; break;
        case O_SELFTEST: exit(selftest());
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s'", argv[optind]);
    if (cfg.port == 0) die("%s", "--port is required");
    if (cfg.path == NULL) cfg.path = cfg.dialect == D_SOCKETIO ? SIO_PATH : "/";
    if (cfg.ack_prefix != NULL && (cfg.mode != MODE_ECHO || strstr(cfg.tmpl, "{a}") == NULL))
        die("%s", "--ack-prefix needs echo mode and a template with {a}");
    ack_prefix_len = cfg.ack_prefix ? strlen(cfg.ack_prefix) : 0;
    if (cfg.mode == MODE_FANOUT && cfg.size < STAMP_LEN) cfg.size = STAMP_LEN;
}

static void resolve_host(void) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(cfg.host, NULL, &hints, &res) != 0 || res == NULL) die("cannot resolve host '%s'", cfg.host);
    memcpy(&server_addr, res->ai_addr, sizeof server_addr);
    server_addr.sin_port = htons((uint16_t)cfg.port);
    freeaddrinfo(res);
    loopback = (ntohl(server_addr.sin_addr.s_addr) >> 24) == 127;
}

static void check_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if ((rlim_t)n_total + 32 > rl.rlim_cur) {
            fprintf(stderr, "loadgen: %d connections need more open files than the limit of %llu; "
                            "split the load over several processes\n",
                    n_total, (unsigned long long)rl.rlim_cur);
            exit(2);
        }
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    n_total = cfg.conns + (cfg.mode == MODE_FANOUT ? cfg.pubs : 0);
    if (cfg.sources == 0) cfg.sources = n_total <= 4000 ? 1 : (n_total + 3999) / 4000;
    resolve_host();
    check_fd_limit();

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rng_state ^= mono_ns() ^ ((uint64_t)getpid() << 32);
    if (rng_state == 0) rng_state = 1;
    hist_init(&lat);
    hist_init(&lat_pub);
    hist_init(&lat_hs);
    msg_req = build_message(cfg.tmpl, cfg.size, 'x', &msg_req_len, &stamp_off);
    if (cfg.words && strstr(cfg.tmpl, "{p}") != NULL) { /* deterministic pseudo-random words */
        words_len = WORDS_CORPUS + (size_t)cfg.size;
        words = xrealloc(NULL, words_len);
        uint64_t w = 0x243F6A8885A308D3ull;
        for (size_t i = 0; i < words_len; i++) {
            w ^= w << 13;
            w ^= w >> 7;
            w ^= w << 17;
            words[i] = (w % 6 == 0 && i > 0) ? ' ' : (uint8_t)('a' + (w >> 8) % 16);
        }
        memcpy(msg_req + stamp_off, words, (size_t)cfg.size);
    }
    {
        /* the ack id hole, looked for outside the payload (which is all 'x') */
        const uint8_t *hole = memmem(msg_req, msg_req_len, "{a}", 3);
        if (hole != NULL) ack_at = (size_t)(hole - msg_req);
    }
    if (cfg.join) msg_join = build_message(cfg.join, 0, 'x', &msg_join_len, NULL);
    if (cfg.conns_msg) msg_conns = build_message(cfg.conns_msg, cfg.size, 'x', &msg_conns_len, NULL);
    if (cfg.mode == MODE_FANOUT && strstr(cfg.tmpl, "{p}") == NULL)
        die("fanout needs a template with {p} (the send stamp goes there): '%s'", cfg.tmpl);

    conns = calloc((size_t)n_total, sizeof *conns);
    if (conns == NULL) die("%s", "out of memory");
    for (int i = 0; i < n_total; i++) {
        conn_t *c = &conns[i];
        c->fd = -1;
        c->state = C_IDLE;
        c->hdr_need = 2;
        c->role = cfg.mode == MODE_ECHO ? R_ECHO : cfg.mode == MODE_CONNS ? R_CONN : i < cfg.conns ? R_SUB : R_PUB;
        c->pub_id = (uint32_t)(i - cfg.conns);
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("%s", "epoll_create1 failed");

    g_now = t_begin = mono_ns();
    set_group(0, cfg.conns);
    progress("# loadgen %s: %d connection(s) to %s:%d%s", MODE_NAMES[cfg.mode], n_total, cfg.host, cfg.port,
             cfg.path);
    /* A hard bound on the whole run, whatever the server does. */
    uint64_t hard_end = t_begin + (uint64_t)((cfg.connect_timeout * 2 + cfg.warmup + cfg.duration + cfg.drain +
                                              cfg.hold + cfg.close_timeout + 5.0) * 1e9);
    uint64_t next_progress = t_begin + 1000000000ull, next_sweep = t_begin;
    uint64_t last_replies = 0;
    static struct epoll_event evs[MAX_EVENTS];

    while (phase != PH_EXIT) {
        if (phase <= PH_RAMP_PUBS) {
            while (hs_inflight < cfg.handshakes && grp_next < grp_hi) start_connect(&conns[grp_next++]);
        }
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 10);
        if (n < 0 && errno != EINTR) die("%s", "epoll_wait failed");
        g_now = mono_ns();
        for (int i = 0; i < n; i++) on_event(&conns[evs[i].data.u64], evs[i].events);
        g_now = mono_ns();
        if (g_now >= next_sweep) {
            if (phase <= PH_RAMP_PUBS) sweep_timeouts();
            next_sweep = g_now + 100000000ull;
        }
        advance();
        if (g_now >= hard_end) {
            progress("# loadgen: hard time limit reached");
            errors[E_TIMEOUT]++;
            break;
        }
        if (g_now >= next_progress) {
            uint64_t count = cfg.mode == MODE_FANOUT ? deliveries : replies;
            progress("# t=%.1fs phase=%s open=%d failed=%d handshaking=%d replies=%" PRIu64 " (+%" PRIu64 "/s)",
                     secs(g_now - t_begin), PHASE_NAMES[phase], n_open, n_failed, hs_inflight, count,
                     count - last_replies);
            last_replies = count;
            next_progress += 1000000000ull;
        }
    }
    for (int i = 0; i < n_total; i++)
        if (conns[i].fd >= 0) release(&conns[i]);
    report();
    return 0;
}
