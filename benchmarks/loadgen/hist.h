/* A log-linear latency histogram: exact below 128 ns, then 64 sub-buckets per power of two
 * (relative error under 1.6 %), covering up to ~2^40 ns (18 minutes) in a fixed 18 KiB table. */
#ifndef LOADGEN_HIST_H
#define LOADGEN_HIST_H

#include <stdint.h>
#include <string.h>

#define HIST_LINEAR 128
#define HIST_SUB 64
#define HIST_OCTAVES 34
#define HIST_BUCKETS (HIST_LINEAR + HIST_OCTAVES * HIST_SUB)

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t min;
    uint64_t max;
    double sum;
} hist_t;

static void hist_init(hist_t *h) {
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

static int hist_index(uint64_t v) {
    if (v < HIST_LINEAR) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    if (shift > HIST_OCTAVES) return HIST_BUCKETS - 1;
    int top = (int)(v >> shift);
    return HIST_LINEAR + (shift - 1) * HIST_SUB + (top - HIST_SUB);
}

/* The middle of bucket idx's value range. */
static uint64_t hist_value(int idx) {
    if (idx < HIST_LINEAR) return (uint64_t)idx;
    int shift = (idx - HIST_LINEAR) / HIST_SUB + 1;
    uint64_t top = (uint64_t)((idx - HIST_LINEAR) % HIST_SUB + HIST_SUB);
    uint64_t lower = top << shift;
    uint64_t upper = ((top + 1) << shift) - 1;
    return lower + (upper - lower) / 2;
}

static void hist_add(hist_t *h, uint64_t v) {
    h->counts[hist_index(v)]++;
    h->total++;
    h->sum += (double)v;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

/* The value at quantile q (0..1), clamped to the observed min and max; 0 when empty. */
static uint64_t hist_quantile(const hist_t *h, double q) {
    if (h->total == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > h->total) rank = h->total;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            if (v < h->min) v = h->min;
            if (v > h->max) v = h->max;
            return v;
        }
    }
    return h->max;
}

#endif
