/* refserver: a minimal C WebSocket server that calibrates the load generator.
 *
 * It does as little as a server can, so that a run against it shows how fast the load generator
 * itself can go and how much of its core that costs (its CPU% column): the measuring instrument's
 * ceiling, not a peer. One epoll thread, non-blocking sockets, an RFC 6455 server side just large
 * enough for the suite (upgrade with Sec-WebSocket-Accept, masked client frames with 7/16/64-bit
 * lengths, unfragmented data messages, ping -> pong, close -> close).
 *
 *   - every data message is echoed back unchanged (so an event request {"event":"echo",...} comes
 *     back as an event of the same shape, and the raw and event echo scenarios both run on it);
 *   - a join (a message starting {"event":"join", or the bare message "join") adds the connection
 *     to the one room and is answered {"event":"joined","data":["room1"]};
 *   - a publish (a message starting {"event":"publish" or "publish ") is sent unchanged to every
 *     member of the room (the publisher included) instead of being echoed: the payload's send stamp
 *     is all the load generator needs.
 *   Only the start of a message decides, so an echo payload of words never reads as a command.
 *
 * Replies are appended to a per-connection buffer and written once per loop iteration.
 *
 *   refserver --port P
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sha1.h"

#define MAX_EVENTS 1024
#define READ_SIZE (256 * 1024)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct conn {
    int fd;
    bool upgraded, in_room, dirty, closing;
    uint8_t *in;  /* unparsed input */
    size_t in_len, in_cap;
    uint8_t *out; /* unwritten output */
    size_t out_len, out_off, out_cap;
    struct conn *next_dirty;
} conn_t;

static int epfd;
static conn_t **room;
static size_t room_len, room_cap;
static conn_t *dirty_head;
static uint8_t rbuf[READ_SIZE];
static volatile sig_atomic_t stop;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (q == NULL && n > 0) {
        fputs("refserver: out of memory\n", stderr);
        exit(2);
    }
    return q;
}

static void mark_dirty(conn_t *c) {
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = dirty_head;
        dirty_head = c;
    }
}

static void out_append(conn_t *c, const void *data, size_t n) {
    if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n) cap *= 2;
        c->out = xrealloc(c->out, cap);
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
    mark_dirty(c);
}

static size_t frame_header(uint8_t *h, int opcode, size_t len) {
    h[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)len >> (8 * (7 - i)));
    return 10;
}

static void send_frame(conn_t *c, int opcode, const uint8_t *payload, size_t len) {
    uint8_t h[10];
    out_append(c, h, frame_header(h, opcode, len));
    out_append(c, payload, len);
}

static void drop(conn_t *c) {
    if (c->fd < 0) return;
    close(c->fd);
    c->fd = -1;
    if (c->in_room) {
        for (size_t i = 0; i < room_len; i++)
            if (room[i] == c) {
                room[i] = room[--room_len];
                break;
            }
    }
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_off = c->out_cap = 0;
    /* the struct itself is freed by the flush loop once it is off the dirty list */
    if (!c->dirty) free(c);
}

static void flush_all(void) {
    while (dirty_head != NULL) {
        conn_t *c = dirty_head;
        dirty_head = c->next_dirty;
        c->dirty = false;
        if (c->fd < 0) {
            free(c);
            continue;
        }
        while (c->out_off < c->out_len) {
            ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (n > 0) {
                c->out_off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
                break;
            }
            drop(c);
            break;
        }
        if (c->fd >= 0 && c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
            if (c->closing) drop(c);
        }
    }
}

static bool starts_with(const uint8_t *p, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && memcmp(p, prefix, n) == 0;
}

static void on_message(conn_t *c, int opcode, uint8_t *p, size_t len) {
    if (starts_with(p, len, "{\"event\":\"publish\"") || starts_with(p, len, "publish ")) {
        uint8_t h[10];
        size_t hl = frame_header(h, opcode, len);
        for (size_t i = 0; i < room_len; i++) {
            out_append(room[i], h, hl);
            out_append(room[i], p, len);
        }
        return;
    }
    if (starts_with(p, len, "{\"event\":\"join\"") || (len == 4 && memcmp(p, "join", 4) == 0)) {
        static const char joined[] = "{\"event\":\"joined\",\"data\":[\"room1\"]}";
        if (!c->in_room) {
            if (room_len == room_cap) {
                room_cap = room_cap ? room_cap * 2 : 1024;
                room = xrealloc(room, room_cap * sizeof *room);
            }
            room[room_len++] = c;
            c->in_room = true;
        }
        send_frame(c, 1, (const uint8_t *)joined, sizeof joined - 1);
        return;
    }
    send_frame(c, opcode, p, len);
}

/* Parses complete frames from c->in; returns false when the connection is to be dropped. */
static bool parse_frames(conn_t *c) {
    size_t off = 0;
    while (c->in_len - off >= 2) {
        uint8_t *f = c->in + off;
        size_t avail = c->in_len - off;
        int opcode = f[0] & 0x0F;
        bool fin = (f[0] & 0x80) != 0;
        if (!(f[1] & 0x80) || !fin) return false; /* clients must mask; no fragments here */
        uint64_t len = f[1] & 0x7F;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | f[2 + i];
            hl = 10;
        }
        if (avail < hl + 4 + len) break;
        uint8_t *key = f + hl, *p = f + hl + 4;
        uint64_t key64;
        memcpy(&key64, key, 4);
        memcpy((uint8_t *)&key64 + 4, key, 4);
        size_t i = 0;
        for (; i + 8 <= len; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            w ^= key64;
            memcpy(p + i, &w, 8);
        }
        for (; i < len; i++) p[i] ^= key[i & 3];
        off += hl + 4 + (size_t)len;
        if (opcode == 1 || opcode == 2) {
            on_message(c, opcode, p, (size_t)len);
        } else if (opcode == 9) {
            send_frame(c, 10, p, (size_t)len);
        } else if (opcode == 8) {
            send_frame(c, 8, p, len >= 2 ? 2 : 0);
            c->closing = true;
            break;
        } else if (opcode != 10) {
            return false;
        }
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    return true;
}

static bool upgrade(conn_t *c) {
    c->in[c->in_len] = '\0';
    char *end = strstr((char *)c->in, "\r\n\r\n");
    if (end == NULL) return c->in_len < 8192;
    char *key = NULL;
    for (char *line = strstr((char *)c->in, "\r\n"); line != NULL && line < end; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "sec-websocket-key:", 18) == 0) {
            key = line + 18;
            while (*key == ' ') key++;
            break;
        }
    }
    if (key == NULL) return false;
    size_t kl = strcspn(key, "\r\n ");
    char keyguid[128];
    int n = snprintf(keyguid, sizeof keyguid, "%.*s%s", (int)kl, key, WS_GUID);
    uint8_t digest[20];
    sha1((const uint8_t *)keyguid, (size_t)n, digest);
    char accept[32];
    base64_encode(digest, 20, accept);
    char resp[256];
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n\r\n",
                      accept);
    out_append(c, resp, (size_t)rl);
    size_t head = (size_t)(end - (char *)c->in) + 4;
    memmove(c->in, c->in + head, c->in_len - head);
    c->in_len -= head;
    c->upgraded = true;
    return parse_frames(c);
}

static void on_readable(conn_t *c) {
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (n > 0) {
            if (c->in_len + (size_t)n + 1 > c->in_cap) {
                size_t cap = c->in_cap ? c->in_cap : 4096;
                while (cap < c->in_len + (size_t)n + 1) cap *= 2;
                c->in = xrealloc(c->in, cap);
                c->in_cap = cap;
            }
            memcpy(c->in + c->in_len, rbuf, (size_t)n);
            c->in_len += (size_t)n;
            if (!(c->upgraded ? parse_frames(c) : upgrade(c))) {
                drop(c);
                return;
            }
            if ((size_t)n < sizeof rbuf) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        drop(c);
        return;
    }
}

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--host") == 0) host = argv[i + 1];
    }
    if (port <= 0) {
        fputs("usage: refserver --port P [--host H]\n", stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(lfd, 4096) < 0) {
        perror("refserver: listen");
        return 2;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le);
    printf("refserver listening on ws://%s:%d\n", host, port);
    fflush(stdout);
    static struct epoll_event evs[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 200);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    if (nc == NULL) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) {
                struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
                mark_dirty(c);
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        }
        flush_all();
    }
    return 0;
}
