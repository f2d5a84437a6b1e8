/* bench/remote.c -- a fast rpmsg remote on the virtual board (shared/sim-board.md).
 *
 * The same remote as rprocd's Python simulator (rprocd/sim/core.py) on the
 * wire: the same resource table byte for byte (RSC_VDEV id 7, dfeatures NS,
 * two vrings num 8 align 16 at 0x200c8000/0x200c9000, RSC_TRACE "Zephyr_log"),
 * the same handshake, the same four endpoints at 1024.. (rpmsg-client-sample
 * and rpmsg-tty echo, rpmsg-sink counts and answers STAT, rpmsg-source
 * streams "<count> <size>"), the same checks of what the host wrote, and
 * nothing ever dropped (backpressure instead).  With --extra-echo N it also
 * announces echo endpoints bench-echo-0 .. bench-echo-(N-1).
 *
 * It sleeps (never spins): one recvmmsg(MSG_WAITFORONE) on D/remote.sock per sleep waits for
 * the host's ring and takes every queued ring (200 ms timeout while attached, 50 ms while
 * waiting, as a safety net for lost rings).  Awake, it sets VRING_USED_F_NO_NOTIFY on both
 * rings at once (the host need not kick a remote that will look again); it runs passes over
 * both rings until one makes no progress; each pass handles everything ready, publishes each
 * used entry as it goes, and rings the host at most once, only if the host wants interrupts
 * (VRING_AVAIL_F_NO_INTERRUPT clear).  Before sleeping it clears its flags, fences, and looks
 * once more.  --early-kick: also ring at the first entry a pass publishes (OpenAMP's
 * virtqueue_kick per message) when the host wants it.
 *
 *   remote --board DIR [--extra-echo N] [--early-kick] [--quiet]
 *
 * SIGTERM/SIGINT: close remote.sock and exit 0, printing a JSON line of
 * counters on stderr (as the Python sim leaves the table in memory).
 */
#include "common.h"

#include <signal.h>
#include <stdarg.h>

enum { WAITING, ATTACHED, FAILED };
enum { ECHO, SINK, SOURCE };
#define MAX_SOURCE_JOBS 16
#define PASSES_PER_SERVICE 256
#define DESC_KIND (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)

struct ept {
    char name[32];
    uint32_t addr;
    int kind;
    int has_peer;
    uint32_t peer;
    uint64_t rx_msgs, rx_bytes, tx_msgs, tx_bytes, sink_msgs, sink_bytes;
};

struct job {
    struct ept *ept;
    uint32_t dst, size, seq;
    uint64_t left;
};

struct dring {
    uint32_t pa, notifyid;
    uint8_t *desc;
    uint8_t *avail; /* u16 flags, u16 idx, u16 ring[num], u16 used_event */
    uint8_t *used;  /* u16 flags, u16 idx, {u32 id, u32 len} ring[num] */
    uint16_t last_avail, used_idx;
};

static struct {
    uint8_t *mem;
    uint8_t *table;
    int state;
    uint32_t features;
    struct ept *epts;
    unsigned nept;
    unsigned ns_next; /* announcements not yet sent: epts[ns_next .. nept) */
    struct dring tx, rx; /* vring0: we send; vring1: we receive */
    int slot;            /* a vring0 descriptor taken, not yet used */
    uint32_t slot_off;
    struct job jobs[MAX_SOURCE_JOBS];
    unsigned job_head, njobs;
    int tx_dirty, rx_dirty;
    int early;                  /* --early-kick: ring at the first message of a pass */
    uint64_t published, rung_at; /* entries published; how many when this pass last rang (0: not yet) */
    int violation;
    char why[160];
    uint8_t filler[MAX_PAYLOAD];
    uint32_t console_pos;
    int sock;
    struct sockaddr_un host;
    struct bell_stats bell;
    int quiet;
    /* counters (what SimStats counts, plus the wake-up figures) */
    uint64_t sessions, sessions_ended, reboots, refused, violations, bad_descriptors, malformed, unknown_dst;
    uint64_t ns_sent, source_jobs, wakeups, timeouts, passes, rx_msgs, tx_msgs;
} R;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    if (R.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("remote-c: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- RAM console (Zephyr's ram_console: wraps round len-1 bytes, last byte NUL) ------ */

static void console_clear(void)
{
    memset(R.mem + (TRACE_PA - WIN_PA), 0, TRACE_LEN);
    R.console_pos = 0;
}

static void trace_line(const char *text)
{
    uint8_t *buf = R.mem + (TRACE_PA - WIN_PA);
    uint32_t size = TRACE_LEN - 1;
    size_t n = strlen(text);
    for (size_t i = 0; i <= n; i++) {
        buf[R.console_pos] = i < n ? (uint8_t)text[i] : '\n';
        R.console_pos = (R.console_pos + 1) % size;
    }
    buf[size] = 0;
}

/* ---- the resource table -------------------------------------------------------------- */

static void w32(uint8_t *p, uint32_t v) { put_le32(p, v); }

static void write_table(void)
{
    uint8_t t[TABLE_LEN];
    memset(t, 0, sizeof t);
    w32(t + 0, 1);          /* ver */
    w32(t + 4, 2);          /* num */
    w32(t + 16, VDEV_OFF);  /* offset[0] */
    w32(t + 20, TRACE_OFF); /* offset[1] */
    uint8_t *v = t + VDEV_OFF;
    w32(v + 0, RSC_VDEV);
    w32(v + 4, VIRTIO_ID_RPMSG);
    w32(v + 8, 0);     /* notifyid */
    w32(v + 12, F_NS); /* dfeatures */
    w32(v + 16, 0);    /* gfeatures */
    w32(v + 20, 0);    /* config_len */
    v[24] = 0;         /* status */
    v[25] = 2;         /* num_of_vrings */
    for (unsigned i = 0; i < 2; i++) {
        uint8_t *r = t + VDEV_VRING(i);
        w32(r + 0, i ? VRING1_PA : VRING0_PA);
        w32(r + 4, VR_ALIGN);
        w32(r + 8, VR_NUM);
        w32(r + 12, i);
        w32(r + 16, 0);
    }
    uint8_t *tr = t + TRACE_OFF;
    w32(tr + 0, RSC_TRACE);
    w32(tr + 4, TRACE_PA);
    w32(tr + 8, TRACE_LEN);
    w32(tr + 12, 0);
    memcpy(tr + 16, "Zephyr_log", 10);
    /* ver 0 first, the body, ver 1 last: a table with ver != 1 means "not ready" */
    st32(R.table, 0);
    memcpy(R.table + 4, t + 4, TABLE_LEN - 4);
    st32(R.table, 1);
}

static uint8_t status(void) { return ld8(R.table + VDEV_STATUS); }

/* ---- device side of a split ring ----------------------------------------------------- */

static void dring_init(struct dring *r, uint32_t pa, uint32_t notifyid)
{
    uint8_t *base = R.mem + (pa - WIN_PA);
    r->pa = pa;
    r->notifyid = notifyid;
    r->desc = base;
    r->avail = base + VR_AVAIL_OFF;
    r->used = base + VR_USED_OFF;
    r->used_idx = ld16(r->used + 2); /* as OpenAMP: start from what is in memory */
    r->last_avail = r->used_idx;
}

static void violation(const char *fmt, uint32_t a, uint32_t b, uint32_t c)
{
    if (!R.violation) {
        R.violation = 1;
        snprintf(R.why, sizeof R.why, fmt, a, b, c);
    }
}

static unsigned avail_pending(struct dring *r)
{
    uint16_t idx = ld16(r->avail + 2);
    unsigned n = (uint16_t)(idx - r->last_avail);
    if (n > VR_NUM) {
        violation("vring %#x: avail.idx %u is more than the ring's 8 entries past %u", r->pa, idx, r->last_avail);
        return 0;
    }
    return n;
}

/* The next avail entry (not taken yet); -1 on a violation. */
static int peek(struct dring *r, uint32_t *addr, uint32_t *len, uint16_t *flags)
{
    uint16_t d = ld16(r->avail + 4 + 2 * (r->last_avail & (VR_NUM - 1)));
    if (d >= VR_NUM) {
        violation("vring %#x: avail entry %u names descriptor %u of 8", r->pa, r->last_avail, d);
        return -1;
    }
    const uint8_t *p = r->desc + 16 * d;
    uint64_t a;
    memcpy(&a, p, 8);
    memcpy(len, p + 8, 4);
    memcpy(flags, p + 12, 2);
    *addr = a > 0xffffffffull ? 0xffffffffu : (uint32_t)a; /* outside the pool either way */
    return d;
}

static void advance(struct dring *r) { r->last_avail++; }

static void kick_wanted(struct dring *r, int on) { st16(r->used, on ? 0 : VRING_USED_F_NO_NOTIFY); }

static void published(struct dring *r);

static void put_used(struct dring *r, uint32_t d, uint32_t len)
{
    uint8_t *e = r->used + 4 + 8 * (r->used_idx & (VR_NUM - 1));
    memcpy(e, &d, 4);
    memcpy(e + 4, &len, 4);
    r->used_idx++;
    st16(r->used + 2, r->used_idx);
    published(r);
}

static int interrupt_wanted(struct dring *r) { return !(ld16(r->avail) & VRING_AVAIL_F_NO_INTERRUPT); }

/* --early-kick: the first entry a pass publishes rings a host that wants it at once, so
 * that it works on it while this pass goes on (OpenAMP rings per message, virtqueue_kick). */
static void published(struct dring *r)
{
    R.published++;
    if (!R.early || R.rung_at)
        return;
    full_fence();
    if (interrupt_wanted(r)) {
        ring_bell(R.sock, &R.host, r->notifyid, &R.bell);
        R.rung_at = R.published;
    }
}

static int rewound(struct dring *r) { return ld16(r->used + 2) != r->used_idx; }

/* ---- sessions ---------------------------------------------------------------------------- */

static void end_session(const char *why)
{
    R.slot = -1;
    R.ns_next = R.nept;
    R.njobs = R.job_head = 0;
    if (R.state == ATTACHED) {
        R.sessions_ended++;
        logmsg("session ended: %s", why);
        char line[320];
        snprintf(line, sizeof line, "rpmsg: session ended (%s)", why);
        trace_line(line);
    }
    R.state = WAITING;
}

static void reboot(const char *why)
{
    end_session(why);
    R.reboots++;
    logmsg("restarting: %s", why);
    char line[320];
    snprintf(line, sizeof line, "rpmsg: fatal: %s; restarting", why);
    trace_line(line);
    write_table();
}

static int overlaps(uint32_t a, uint32_t alen, uint32_t b, uint32_t blen) { return a < b + blen && b < a + alen; }

/* What is wrong with the host's vring entries, or NULL. */
static const char *check_rings(uint32_t da[2], char *why, size_t n)
{
    for (unsigned i = 0; i < 2; i++) {
        const uint8_t *r = R.table + VDEV_VRING(i);
        uint32_t align = get_le32(r + 4), num = get_le32(r + 8), nid = get_le32(r + 12);
        da[i] = get_le32(r);
        if (num != VR_NUM || align != VR_ALIGN || nid != i) {
            snprintf(why, n, "vring%u changed to num %u, align %u, notifyid %u", i, num, align, nid);
            return why;
        }
        if (da[i] == FW_RSC_ADDR_ANY) {
            snprintf(why, n, "vring%u has no address (the host left FW_RSC_ADDR_ANY)", i);
            return why;
        }
        if (da[i] < WIN_PA || da[i] - WIN_PA > WIN_SIZE - VR_SIZE) {
            snprintf(why, n, "vring%u at %#x+%#x is outside the shared window", i, da[i], VR_SIZE);
            return why;
        }
        if (da[i] % VR_ALIGN) {
            snprintf(why, n, "vring%u at %#x is not aligned to %u", i, da[i], VR_ALIGN);
            return why;
        }
        if (overlaps(da[i], VR_SIZE, TREGION_PA, TREGION_SIZE) || overlaps(da[i], VR_SIZE, BUF_PA, BUF_LEN) ||
            (i == 1 && overlaps(da[1], VR_SIZE, da[0], VR_SIZE))) {
            snprintf(why, n, "vring%u at %#x+%#x overlaps the table region, the buffer pool or vring0", i, da[i],
                     VR_SIZE);
            return why;
        }
    }
    return NULL;
}

static int table_intact(void)
{
    const uint8_t *t = R.table;
    return get_le32(t) == 1 && get_le32(t + 4) == 2 && get_le32(t + 16) == VDEV_OFF &&
           get_le32(t + VDEV_OFF) == RSC_VDEV && get_le32(t + VDEV_OFF + 4) == VIRTIO_ID_RPMSG &&
           t[VDEV_NUM_VRINGS] == 2;
}

static void attach(void)
{
    if (!table_intact()) {
        reboot("resource table damaged: the vdev entry moved");
        return;
    }
    uint32_t da[2];
    char why[160];
    if (check_rings(da, why, sizeof why)) {
        R.refused++;
        R.state = FAILED;
        logmsg("refusing the host's ring layout: %s", why);
        char line[200];
        snprintf(line, sizeof line, "rpmsg: refusing the host's ring layout: %s", why);
        trace_line(line);
        return;
    }
    dring_init(&R.tx, da[0], 0);
    dring_init(&R.rx, da[1], 1);
    R.features = F_NS & get_le32(R.table + VDEV_GFEATURES);
    R.state = ATTACHED;
    R.sessions++;
    R.slot = -1;
    for (unsigned i = 0; i < R.nept; i++) {
        R.epts[i].has_peer = 0;
        R.epts[i].sink_msgs = R.epts[i].sink_bytes = 0;
    }
    R.ns_next = (R.features & F_NS) ? 0 : R.nept;
    logmsg("attached: vrings at %#x and %#x, features %#x, %u endpoints%s", da[0], da[1], R.features, R.nept,
           (R.features & F_NS) ? "" : " (name service off)");
    char line[120];
    snprintf(line, sizeof line, "rpmsg: attached, %u endpoints%s", R.nept,
             (R.features & F_NS) ? "" : " (name service off)");
    trace_line(line);
}

/* Still attached (attaching afresh if the host set the rings up again under us). */
static int session_ok(void)
{
    if (R.state != ATTACHED)
        return 0;
    uint8_t st = status();
    if (!(st & S_DRIVER_OK) || (st & S_NEEDS_RESET)) {
        char why[40];
        snprintf(why, sizeof why, "host set status 0x%02x", st);
        end_session(why);
        return 0;
    }
    if (rewound(&R.tx) || rewound(&R.rx)) {
        end_session("the host set the rings up afresh");
        attach();
        return R.state == ATTACHED;
    }
    return 1;
}

/* ---- messages ------------------------------------------------------------------------------ */

static void complain(uint64_t *counter, const char *what)
{
    (*counter)++;
    if (*counter <= 10 || *counter % 1000 == 0) {
        logmsg("%s", what);
        char line[200];
        snprintf(line, sizeof line, "rpmsg: %s", what);
        trace_line(line);
    }
}

/* Hold one empty vring0 buffer; give back (with length 0) unusable ones. */
static int take_slot(void)
{
    if (R.slot >= 0)
        return 1;
    while (avail_pending(&R.tx)) {
        uint32_t addr, len;
        uint16_t flags;
        int d = peek(&R.tx, &addr, &len, &flags);
        if (d < 0)
            return 0;
        advance(&R.tx);
        uint32_t off = addr - BUF_PA;
        if ((flags & DESC_KIND) != VRING_DESC_F_WRITE || len < BUF_SIZE || addr < BUF_PA || off > BUF_LEN ||
            len > BUF_LEN - off) {
            put_used(&R.tx, (uint32_t)d, 0);
            R.tx_dirty = 1;
            char what[120];
            snprintf(what, sizeof what, "vring0 descriptor %d: %#x+%#x flags %#x is not a buffer", d, addr, len,
                     flags);
            complain(&R.bad_descriptors, what);
            continue;
        }
        R.slot = d;
        R.slot_off = off;
        return 1;
    }
    return 0;
}

static uint8_t *bufs(uint32_t off) { return R.mem + (BUF_PA - WIN_PA) + off; }

static void hdr(uint8_t *p, uint32_t src, uint32_t dst, uint32_t len)
{
    put_le32(p, src);
    put_le32(p + 4, dst);
    put_le32(p + 8, 0);
    p[12] = (uint8_t)len;
    p[13] = (uint8_t)(len >> 8);
    p[14] = p[15] = 0;
}

/* Publish the held slot with n payload bytes already in it. */
static void publish_slot(uint32_t src, uint32_t dst, uint32_t n)
{
    hdr(bufs(R.slot_off), src, dst, n);
    put_used(&R.tx, (uint32_t)R.slot, HDR_SIZE + n);
    R.slot = -1;
    R.tx_dirty = 1;
    R.tx_msgs++;
}

static void emit_ns(void)
{
    struct ept *e = &R.epts[R.ns_next++];
    uint8_t *p = bufs(R.slot_off) + HDR_SIZE;
    memset(p, 0, 40);
    memcpy(p, e->name, strnlen(e->name, 32));
    put_le32(p + 32, e->addr);
    put_le32(p + 36, 0); /* RPMSG_NS_CREATE */
    publish_slot(e->addr, RPMSG_NS_ADDR, 40);
    R.ns_sent++;
}

static void emit_source(void)
{
    struct job *j = &R.jobs[R.job_head];
    uint8_t *p = bufs(R.slot_off) + HDR_SIZE;
    put_le32(p, j->seq);
    memcpy(p + 4, R.filler, j->size - 4);
    publish_slot(j->ept->addr, j->dst, j->size);
    j->ept->tx_msgs++;
    j->ept->tx_bytes += j->size;
    j->seq++;
    if (!--j->left) {
        R.job_head = (R.job_head + 1) % MAX_SOURCE_JOBS;
        R.njobs--;
    }
}

static struct ept *ept_at(uint32_t addr)
{
    if (addr < RPMSG_FIRST_ADDR || addr - RPMSG_FIRST_ADDR >= R.nept)
        return NULL;
    return &R.epts[addr - RPMSG_FIRST_ADDR];
}

/* A decimal integer as Python's int() takes it after split(): optional sign, digits. */
static int parse_int(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    if (i == n)
        return 0;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        if (v > (unsigned long long)INT64_MAX / 10)
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > (unsigned long long)INT64_MAX)
        return 0;
    *out = neg ? -(long long)v : (long long)v;
    return 1;
}

static int is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

static void start_source(struct ept *e, uint32_t dst, const uint8_t *req, uint32_t n)
{
    char what[120];
    while (n && req[n - 1] == 0) /* rstrip(b"\0") */
        n--;
    const char *tok[3];
    size_t tlen[3];
    unsigned nt = 0;
    for (uint32_t i = 0; i < n;) {
        while (i < n && is_space(req[i]))
            i++;
        if (i == n)
            break;
        uint32_t s = i;
        while (i < n && !is_space(req[i]))
            i++;
        if (nt < 3) {
            tok[nt] = (const char *)req + s;
            tlen[nt] = i - s;
        }
        nt++;
    }
    long long count, size;
    if (nt != 2 || !parse_int(tok[0], tlen[0], &count) || !parse_int(tok[1], tlen[1], &size)) {
        snprintf(what, sizeof what, "rpmsg-source request of %u bytes is not '<count> <size>'", n);
        complain(&R.malformed, what);
        return;
    }
    if (count < 0 || size < 4 || size > (long long)MAX_PAYLOAD) {
        snprintf(what, sizeof what, "rpmsg-source request %lld x %lld: size must be 4..%u", count, size, MAX_PAYLOAD);
        complain(&R.malformed, what);
        return;
    }
    R.source_jobs++;
    if (count) {
        struct job *j = &R.jobs[(R.job_head + R.njobs) % MAX_SOURCE_JOBS];
        j->ept = e;
        j->dst = dst;
        j->left = (uint64_t)count;
        j->size = (uint32_t)size;
        j->seq = 0;
        R.njobs++;
    }
}

/* Handle the next vring1 message; 0 (nothing taken) when its reply cannot be sent yet. */
static int receive(void)
{
    uint32_t addr, length;
    uint16_t flags;
    int d = peek(&R.rx, &addr, &length, &flags);
    if (d < 0)
        return 0;
    uint32_t off = addr - BUF_PA;
    char what[120];
    if ((flags & DESC_KIND) || length < HDR_SIZE || addr < BUF_PA || off > BUF_LEN || length > BUF_LEN - off) {
        advance(&R.rx);
        put_used(&R.rx, (uint32_t)d, 0);
        R.rx_dirty = 1;
        snprintf(what, sizeof what, "vring1 descriptor %d: %#x+%#x flags %#x is not a message", d, addr, length,
                 flags);
        complain(&R.bad_descriptors, what);
        return 1;
    }
    const uint8_t *m = bufs(off);
    uint32_t src = get_le32(m), dst = get_le32(m + 4);
    uint32_t n = (uint32_t)m[12] | (uint32_t)m[13] << 8;
    const uint8_t *payload = m + HDR_SIZE;
    struct ept *e = ept_at(dst);
    if (n > length - HDR_SIZE || n > MAX_PAYLOAD) {
        snprintf(what, sizeof what, "message of %u bytes in a %u-byte buffer", n, length);
        complain(&R.malformed, what);
    } else if (!e) {
        snprintf(what, sizeof what, "message from %#x to unknown address %#x", src, dst);
        complain(&R.unknown_dst, what);
    } else {
        if (e->kind == ECHO) {
            if (!take_slot())
                return 0;
            memcpy(bufs(R.slot_off) + HDR_SIZE, payload, n);
            publish_slot(e->addr, src, n);
            e->tx_msgs++;
            e->tx_bytes += n;
        } else if (e->kind == SINK) {
            if (n == 4 && memcmp(payload, "STAT", 4) == 0) {
                if (!take_slot())
                    return 0;
                char reply[48];
                int k = snprintf(reply, sizeof reply, "%llu %llu", (unsigned long long)e->sink_msgs,
                                 (unsigned long long)e->sink_bytes);
                memcpy(bufs(R.slot_off) + HDR_SIZE, reply, (size_t)k);
                publish_slot(e->addr, src, (uint32_t)k);
                e->tx_msgs++;
                e->tx_bytes += (uint64_t)k;
            } else {
                e->sink_msgs++;
                e->sink_bytes += n;
            }
        } else {
            if (R.njobs >= MAX_SOURCE_JOBS)
                return 0;
            start_source(e, src, payload, n);
        }
        if (!e->has_peer) {
            e->has_peer = 1;
            e->peer = src;
        }
        e->rx_msgs++;
        e->rx_bytes += n;
        R.rx_msgs++;
    }
    advance(&R.rx);
    put_used(&R.rx, (uint32_t)d, length); /* as OpenAMP: the descriptor's length */
    R.rx_dirty = 1;
    return 1;
}

/* One batch: what is ready now in both rings, then at most one doorbell.  1 on progress. */
static int pass(void)
{
    R.passes++;
    R.tx_dirty = R.rx_dirty = 0;
    R.rung_at = 0;
    unsigned rx_budget = avail_pending(&R.rx);
    unsigned tx_budget = VR_NUM;
    for (;;) {
        int did = 0;
        if ((R.ns_next < R.nept || R.njobs) && tx_budget && take_slot()) {
            tx_budget--;
            did = 1;
            if (R.ns_next < R.nept)
                emit_ns();
            else
                emit_source();
        }
        /* while announcements are pending nothing is received (OpenAMP blocks in rpmsg_send) */
        if (rx_budget && R.ns_next >= R.nept && receive()) {
            rx_budget--;
            did = 1;
        }
        if (R.violation || !did)
            break;
    }
    if (R.violation)
        return 0;
    if ((R.tx_dirty || R.rx_dirty) && (!R.rung_at || R.published != R.rung_at)) {
        full_fence(); /* used.idx stored, now the host's flag is loaded */
        if (R.tx_dirty && interrupt_wanted(&R.tx))
            ring_bell(R.sock, &R.host, R.tx.notifyid, &R.bell);
        else if (R.rx_dirty && interrupt_wanted(&R.rx))
            ring_bell(R.sock, &R.host, R.rx.notifyid, &R.bell);
    }
    return R.tx_dirty || R.rx_dirty;
}

/* Do everything that is ready.  1 when work was left for another call. */
static int service(void)
{
    uint8_t st = status();
    if (R.state == FAILED) {
        if ((st & S_DRIVER_OK) && !(st & S_NEEDS_RESET))
            return 0;
        R.state = WAITING;
        return 0;
    }
    if (R.state == WAITING) {
        if (!(st & S_DRIVER_OK) || (st & S_NEEDS_RESET))
            return 0;
        attach();
    }
    kick_wanted(&R.tx, 0); /* awake: the host need not ring for what we will see anyway */
    kick_wanted(&R.rx, 0);
    for (int i = 0; i < PASSES_PER_SERVICE; i++) {
        if (!session_ok())
            return 0;
        int progress = pass();
        if (!R.violation && progress)
            continue;
        if (!R.violation) {
            kick_wanted(&R.tx, 1); /* about to sleep: ring me, then look once more */
            kick_wanted(&R.rx, 1);
            full_fence(); /* flags stored before avail.idx is loaded again */
            if (!pass() && !R.violation)
                return 0;
            if (!R.violation) {
                kick_wanted(&R.tx, 0);
                kick_wanted(&R.rx, 0);
                continue;
            }
        }
        R.violation = 0;
        R.violations++;
        char why[200];
        snprintf(why, sizeof why, "ring violation: %s", R.why);
        logmsg("%s", why);
        reboot(why);
        return 0;
    }
    kick_wanted(&R.tx, 1); /* more to do, but look at the doorbell: keep the host's kicks coming */
    kick_wanted(&R.rx, 1);
    return 1;
}

/* ---- main -------------------------------------------------------------------------------- */

static void print_stats(void)
{
    fprintf(stderr,
            "remote-c: stats {\"sessions\": %llu, \"sessions_ended\": %llu, \"reboots\": %llu, \"refused\": %llu, "
            "\"violations\": %llu, \"bad_descriptors\": %llu, \"malformed\": %llu, \"unknown_dst\": %llu, "
            "\"ns_sent\": %llu, \"source_jobs\": %llu, \"rx_msgs\": %llu, \"tx_msgs\": %llu, \"wakeups\": %llu, "
            "\"timeouts\": %llu, \"passes\": %llu, \"rings_sent\": %llu, \"rings_lost\": %llu, "
            "\"rings_dropped\": %llu, "
            "\"rings_received\": %llu, \"noise\": %llu}\n",
            (unsigned long long)R.sessions, (unsigned long long)R.sessions_ended, (unsigned long long)R.reboots,
            (unsigned long long)R.refused, (unsigned long long)R.violations,
            (unsigned long long)R.bad_descriptors, (unsigned long long)R.malformed,
            (unsigned long long)R.unknown_dst, (unsigned long long)R.ns_sent, (unsigned long long)R.source_jobs,
            (unsigned long long)R.rx_msgs, (unsigned long long)R.tx_msgs, (unsigned long long)R.wakeups,
            (unsigned long long)R.timeouts,
            (unsigned long long)R.passes, (unsigned long long)R.bell.sent, (unsigned long long)R.bell.lost,
            (unsigned long long)R.bell.dropped, (unsigned long long)R.bell.received,
            (unsigned long long)R.bell.noise);
}

static void usage(void)
{
    fprintf(stderr, "usage: remote --board DIR [--extra-echo N] [--early-kick] [--quiet]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    long extra = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--board") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--extra-echo") && i + 1 < argc) {
            char *end;
            extra = strtol(argv[++i], &end, 10);
            if (*end || extra < 0 || extra > 100000)
                usage();
        } else if (!strcmp(argv[i], "--early-kick"))
            R.early = 1;
        else if (!strcmp(argv[i], "--quiet"))
            R.quiet = 1;
        else
            usage();
    }
    if (!dir)
        usage();

    static const struct {
        const char *name;
        int kind;
    } base[] = {{"rpmsg-client-sample", ECHO}, {"rpmsg-tty", ECHO}, {"rpmsg-sink", SINK}, {"rpmsg-source", SOURCE}};
    R.nept = 4 + (unsigned)extra;
    R.epts = calloc(R.nept, sizeof *R.epts);
    if (!R.epts)
        return 1;
    for (unsigned i = 0; i < R.nept; i++) {
        struct ept *e = &R.epts[i];
        if (i < 4) {
            snprintf(e->name, sizeof e->name, "%s", base[i].name);
            e->kind = base[i].kind;
        } else {
            snprintf(e->name, sizeof e->name, "bench-echo-%u", i - 4);
            e->kind = ECHO;
        }
        e->addr = RPMSG_FIRST_ADDR + i;
    }
    for (unsigned i = 0; i < MAX_PAYLOAD; i++)
        R.filler[i] = (uint8_t)i; /* bytes(range(256)) * 2 */

    R.mem = map_board_memory(dir);
    if (!R.mem)
        return 1;
    R.table = R.mem + (TABLE_PA - WIN_PA);
    R.state = WAITING;
    R.slot = -1;
    R.ns_next = R.nept;

    /* boot: clear the trace, write the table (status 0), bind remote.sock */
    console_clear();
    trace_line("*** Booting rprocd bench remote (C) ***");
    write_table();
    char line[120];
    snprintf(line, sizeof line, "rpmsg: resource table at %#x, waiting for the host", TABLE_PA);
    trace_line(line);
    if (set_sun(&R.host, dir, "host.sock") < 0)
        return 1;
    R.sock = bind_doorbell(dir, "remote.sock");
    if (R.sock < 0 || set_blocking(R.sock) < 0)
        return 1;
    logmsg("remote on board %s: table at %#x, vrings %#x/%#x, %u endpoints, waiting for the host", dir, TABLE_PA,
           VRING0_PA, VRING1_PA, R.nept);

    /* SIGTERM/SIGINT interrupt the wait (no SA_RESTART); one that comes just before it is seen
     * when the wait's timeout ends, at most 200 ms later. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    long timeout = -1;
    while (!stop_requested) {
        int more = service();
        long ms = R.state == ATTACHED ? 200 : 50;
        if (ms != timeout && set_bell_timeout(R.sock, ms) == 0)
            timeout = ms;
        if (stop_requested)
            break;
        unsigned got = wait_bells(R.sock, !more, &R.bell);
        if (got || !more)
            R.wakeups++;
        if (!got && !more && R.state == ATTACHED && !stop_requested)
            R.timeouts++; /* attached and woken by the safety net, not a ring */
    }
    close(R.sock);
    char path[sizeof R.host.sun_path + 16];
    snprintf(path, sizeof path, "%s/remote.sock", dir);
    unlink(path);
    print_stats();
    return 0;
}
