/* bench/host.c -- a minimal rpmsg host that drives the rings directly: the remote's
 * own capacity, without rprocd (nor sockets, nor Python) in the way.
 *
 *   host --board DIR [--modes rtt,pipe,sink,source] [--duration S] [--endpoints N]
 *        [--early-kick] [--ready] [--remote-pid PID]
 *
 * --ready: once attached, print "ready" and wait for a line on stdin before the modes; after
 * them, stay attached until stdin closes (the bench counts the modes alone with perf stat -p).
 * --remote-pid: the remote's pid, so that a wake-up by the safety-net timeout is counted as a
 * lost wake-up ("lost_wakeups") only when the remote was asleep, not when it did not get to run.
 *
 * It attaches as sim-board.md says a host does (status 0, 1, 3, gfeatures, zeroed
 * rings, 8 receive buffers posted to vring0, status 7, ring vring0's notifyid),
 * collects N name-service announcements (default 4), runs the modes in order on
 * rpmsg-client-sample / rpmsg-sink / rpmsg-source, then detaches (status 0, ring).
 * It is the bench's reference host, written to the standard of an upstream OpenAMP/Linux
 * virtio driver and then some, so that "through rprocd / this host" means something:
 *  - it sleeps (never spins): one recvmmsg(MSG_WAITFORONE) per sleep both waits for the
 *    remote's ring and takes every queued ring (100 ms timeout as a safety net);
 *  - while awake it sets VRING_AVAIL_F_NO_INTERRUPT on both rings (virtqueue_disable_cb), so a
 *    busy host costs the remote no rings; before sleeping it asks for vring0 always and for
 *    vring1 only while it waits for a transmit buffer, fences, and looks once more
 *    (virtqueue_enable_cb's re-check);
 *  - it handles everything ready in one pass, publishes avail.idx once per batch and kicks at
 *    most once per batch, only when the remote has not set VRING_USED_F_NO_NOTIFY, and for
 *    re-posted receive buffers only when the remote had none left;
 *  - --early-kick: publish each entry at once and kick at the first of a batch (OpenAMP's
 *    virtqueue_kick per message), so that a remote on another CPU starts while the host goes
 *    on; the A/B in bench/README.md says when that pays.
 * One JSON line per mode.
 *
 * Modes, as bench/client.c does them through rprocd: rtt (16-byte ping-pong),
 * pipe (16-byte echoes, as many in flight as the rings hold), sink (496 bytes,
 * then STAT must match), source (496 bytes, "<5000> <496>" chunks, two in flight,
 * every sequence number checked).
 */
#include "common.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#define HOST_ADDR 0x400u

static struct {
    uint8_t *mem, *table;
    int sock;
    struct sockaddr_un remote;
    struct bell_stats bell;
    /* vring0: the remote sends (we post empty buffers); vring1: we send */
    uint8_t *rx_desc, *rx_avail, *rx_used, *tx_desc, *tx_avail, *tx_used;
    uint16_t rx_avail_idx, rx_last_used, tx_avail_idx, tx_last_used;
    uint16_t rx_published, tx_published;
    unsigned tx_free[VR_NUM], ntx_free;
    uint32_t notify[2];
    uint32_t ept_addr[4]; /* client-sample, tty, sink, source */
    unsigned nns;
    uint64_t wakeups, kicks, timeouts, lost_wakeups;
    long remote_pid; /* --remote-pid: to tell a lost wake-up from a remote that did not run */
    int early;          /* --early-kick: publish each message and kick at the first of a batch */
    uint16_t kicked[2]; /* avail.idx of vring0/vring1 as of the last kick (or flush) */
} H;

static uint8_t *at(uint32_t pa) { return H.mem + (pa - WIN_PA); }

/* ---- rings ------------------------------------------------------------------------------- */

static void rx_post(unsigned d)
{
    uint8_t *e = H.rx_desc + 16 * d;
    uint64_t addr = BUF_PA + d * BUF_SIZE;
    uint32_t len = BUF_SIZE;
    uint16_t flags = VRING_DESC_F_WRITE, next = 0;
    memcpy(e, &addr, 8);
    memcpy(e + 8, &len, 4);
    memcpy(e + 12, &flags, 2);
    memcpy(e + 14, &next, 2);
    st16(H.rx_avail + 4 + 2 * (H.rx_avail_idx & (VR_NUM - 1)), (uint16_t)d);
    H.rx_avail_idx++;
}

/* Kick the remote for ring i unless it said it needs none (VRING_USED_F_NO_NOTIFY: it is
 * awake and will look again before it sleeps).  The caller has fenced after publishing. */
static int kick_if_wanted(int i)
{
    const uint8_t *used = i ? H.tx_used : H.rx_used;
    if (ld16(used) & VRING_USED_F_NO_NOTIFY)
        return 0;
    ring_bell(H.sock, &H.remote, H.notify[i], &H.bell);
    H.kicks++;
    return 1;
}

/* New receive buffers need a kick only if the remote had used every one posted before
 * (rx_old): otherwise it has a buffer and will find the new ones when it needs them.  Safe
 * because both sides fence between their store and their load: if the remote's last use is
 * not seen here, its re-check before sleeping sees the new avail.idx. */
static int remote_starved(uint16_t rx_old) { return ld16(H.rx_used + 2) == rx_old; }

/* Publish new avail entries on both rings; at most one kick, only where the remote wants it
 * (and none for what an early kick of this batch already announced, see send_msg). */
static void flush(void)
{
    int kick[2];
    uint16_t rx_old = H.rx_published;
    if (H.rx_published != H.rx_avail_idx) {
        st16(H.rx_avail + 2, H.rx_avail_idx);
        H.rx_published = H.rx_avail_idx;
    }
    if (H.tx_published != H.tx_avail_idx) {
        st16(H.tx_avail + 2, H.tx_avail_idx);
        H.tx_published = H.tx_avail_idx;
    }
    kick[0] = H.kicked[0] != H.rx_published; /* what no early kick announced (publish_now) */
    kick[1] = H.kicked[1] != H.tx_published;
    if (kick[0] || kick[1]) {
        full_fence(); /* avail.idx stored, now the remote's flag is loaded */
        kick[0] = kick[0] && remote_starved(rx_old);
        if (!(kick[1] && kick_if_wanted(1)) && kick[0])
            kick_if_wanted(0);
    }
    H.kicked[0] = H.rx_published;
    H.kicked[1] = H.tx_published;
}

/* --early-kick: publish ring i's new entry at once; the first of a batch (since the last
 * flush) kicks a remote that sleeps, so that it works while the host goes on. */
static void publish_now(int i)
{
    if (!H.early)
        return;
    uint16_t idx = i ? H.tx_avail_idx : H.rx_avail_idx;
    uint16_t *pub = i ? &H.tx_published : &H.rx_published, old = *pub;
    st16((i ? H.tx_avail : H.rx_avail) + 2, idx);
    *pub = idx;
    if ((uint16_t)(idx - H.kicked[i]) == 1) {
        full_fence();
        if ((i || remote_starved(old)) && kick_if_wanted(i))
            H.kicked[i] = idx;
    }
}

static unsigned reclaim(void)
{
    unsigned n = 0;
    uint16_t idx = ld16(H.tx_used + 2);
    while (H.tx_last_used != idx) {
        uint32_t d;
        memcpy(&d, H.tx_used + 4 + 8 * (H.tx_last_used & (VR_NUM - 1)), 4);
        if (d >= VR_NUM) {
            fprintf(stderr, "host: bad used id %u on vring1\n", d);
            exit(1);
        }
        H.tx_free[H.ntx_free++] = d;
        H.tx_last_used++;
        n++;
    }
    return n;
}

/* Queue one message (published by flush()); 0 when every transmit buffer is out. */
static int send_msg(uint32_t dst, const void *payload, uint32_t n)
{
    if (!H.ntx_free && !reclaim())
        return 0;
    unsigned d = H.tx_free[--H.ntx_free];
    uint32_t pa = BUF_PA + (VR_NUM + d) * BUF_SIZE;
    uint8_t *b = at(pa);
    put_le32(b, HOST_ADDR);
    put_le32(b + 4, dst);
    put_le32(b + 8, 0);
    b[12] = (uint8_t)n;
    b[13] = (uint8_t)(n >> 8);
    b[14] = b[15] = 0;
    memcpy(b + HDR_SIZE, payload, n);
    uint8_t *e = H.tx_desc + 16 * d;
    uint64_t addr = pa;
    uint32_t len = HDR_SIZE + n;
    uint16_t zero = 0;
    memcpy(e, &addr, 8);
    memcpy(e + 8, &len, 4);
    memcpy(e + 12, &zero, 2);
    memcpy(e + 14, &zero, 2);
    st16(H.tx_avail + 4 + 2 * (H.tx_avail_idx & (VR_NUM - 1)), (uint16_t)d);
    H.tx_avail_idx++;
    publish_now(1);
    return 1;
}

typedef void (*on_msg)(uint32_t src, uint32_t dst, const uint8_t *p, uint32_t n);

/* Handle every received message (buffers re-posted, published by flush()). */
static unsigned process_rx(on_msg cb)
{
    unsigned n = 0;
    uint16_t idx = ld16(H.rx_used + 2);
    while (H.rx_last_used != idx) {
        uint32_t d, len;
        const uint8_t *e = H.rx_used + 4 + 8 * (H.rx_last_used & (VR_NUM - 1));
        memcpy(&d, e, 4);
        memcpy(&len, e + 4, 4);
        if (d >= VR_NUM || len < HDR_SIZE || len > BUF_SIZE) {
            fprintf(stderr, "host: bad used entry %u/%u on vring0\n", d, len);
            exit(1);
        }
        const uint8_t *b = at(BUF_PA + d * BUF_SIZE);
        uint32_t mlen = (uint32_t)b[12] | (uint32_t)b[13] << 8;
        if (mlen > len - HDR_SIZE) {
            fprintf(stderr, "host: message of %u bytes in %u\n", mlen, len);
            exit(1);
        }
        cb(get_le32(b), get_le32(b + 4), b + HDR_SIZE, mlen);
        H.rx_last_used++;
        rx_post(d);
        publish_now(0);
        n++;
    }
    return n;
}

/* While the host is awake it asks for no interrupts (virtqueue_disable_cb): the remote then
 * publishes without ringing.  Before sleeping it asks again -- vring0 always, vring1 only when
 * it waits for a transmit buffer -- fences, and looks once more (virtqueue_enable_cb's
 * re-check), so that nothing published meanwhile is slept through.  The sleep and the drain of
 * every queued ring are one recvmmsg (wait_bells), with a 100 ms timeout as a safety net. */
static void busy(void)
{
    st16(H.rx_avail, VRING_AVAIL_F_NO_INTERRUPT);
    st16(H.tx_avail, VRING_AVAIL_F_NO_INTERRUPT);
}

/* The remote's scheduler state ('S': asleep in its wait, 'R': running or waiting for a CPU), from
 * /proc/PID/stat (proc(5), field 3); 0 when unknown. */
static char remote_state(void)
{
    if (!H.remote_pid)
        return 0;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", H.remote_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

/* Woken by the safety net, not by a ring.  Every wait of the host is for something the remote
 * rings for, so either the remote did not get to run for 100 ms (a busy machine, a stolen vCPU),
 * or a wake-up was lost: the remote sleeps in its wait, asks to be kicked, has read every kick
 * (SIOCOUTQ 0: Linux's unix_outq_len, what this socket sent that is not yet received), and has
 * not rung (SIOCINQ 0: nothing queued here), while the host waits on it.  Told apart only with
 * --remote-pid (the remote's scheduler state). */
static int pending(int want_tx)
{
    return ld16(H.rx_used + 2) != H.rx_last_used || (want_tx && ld16(H.tx_used + 2) != H.tx_last_used);
}

static void timed_out(void)
{
    H.timeouts++;
    int outq = -1, inq = -1;
    /* the state first: a remote seen asleep, with no ring of its own queued here after that (it
     * did not just run late, ring and sleep again), and every kick of ours read */
    if (remote_state() == 'S' && ioctl(H.sock, SIOCINQ, &inq) == 0 && inq == 0 &&
        ioctl(H.sock, SIOCOUTQ, &outq) == 0 && outq == 0 && !(ld16(H.rx_used) & VRING_USED_F_NO_NOTIFY) &&
        !(ld16(H.tx_used) & VRING_USED_F_NO_NOTIFY))
        H.lost_wakeups++;
}

static void wait_ring(int want_tx)
{
    st16(H.rx_avail, 0);
    st16(H.tx_avail, want_tx ? 0 : VRING_AVAIL_F_NO_INTERRUPT);
    full_fence();
    if (!pending(want_tx)) {
        if (!wait_bells(H.sock, 1, &H.bell))
            timed_out();
        H.wakeups++;
    }
    busy();
}

/* ---- attach -------------------------------------------------------------------------------- */

static void on_ns(uint32_t src, uint32_t dst, const uint8_t *p, uint32_t n)
{
    static const char *names[4] = {"rpmsg-client-sample", "rpmsg-tty", "rpmsg-sink", "rpmsg-source"};
    (void)src;
    if (dst != RPMSG_NS_ADDR || n != 40)
        return;
    for (int i = 0; i < 4; i++)
        if (!strncmp((const char *)p, names[i], 32))
            H.ept_addr[i] = get_le32(p + 32);
    H.nns++;
}

static int attach(const char *dir, unsigned endpoints)
{
    H.table = at(TABLE_PA);
    uint64_t deadline = now_ns() + 10000000000ull;
    while (ld32(H.table) != 1 || get_le32(H.table + VDEV_OFF) != RSC_VDEV) {
        if (now_ns() > deadline) {
            fprintf(stderr, "host: no resource table\n");
            return -1;
        }
        usleep(2000);
    }
    if (ld8(H.table + VDEV_STATUS) & S_DRIVER_OK) { /* an earlier host: reset the remote */
        st8(H.table + VDEV_STATUS, 0);
        ring_bell(H.sock, &H.remote, 0, &H.bell);
        usleep(100000);
    }
    uint32_t da[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *r = H.table + VDEV_VRING(i);
        da[i] = get_le32(r);
        H.notify[i] = get_le32(r + 12);
        if (get_le32(r + 8) != VR_NUM || get_le32(r + 4) != VR_ALIGN || da[i] == FW_RSC_ADDR_ANY) {
            fprintf(stderr, "host: unexpected vring layout\n");
            return -1;
        }
    }
    st8(H.table + VDEV_STATUS, 0);
    st8(H.table + VDEV_STATUS, S_ACKNOWLEDGE);
    st8(H.table + VDEV_STATUS, S_ACKNOWLEDGE | S_DRIVER);
    st32(H.table + VDEV_GFEATURES, F_NS);
    uint8_t *r0 = at(da[0]), *r1 = at(da[1]);
    memset(r0, 0, VR_SIZE);
    memset(r1, 0, VR_SIZE);
    H.rx_desc = r0;
    H.rx_avail = r0 + VR_AVAIL_OFF;
    H.rx_used = r0 + VR_USED_OFF;
    H.tx_desc = r1;
    H.tx_avail = r1 + VR_AVAIL_OFF;
    H.tx_used = r1 + VR_USED_OFF;
    for (unsigned d = 0; d < VR_NUM; d++) {
        rx_post(d);
        H.tx_free[H.ntx_free++] = VR_NUM - 1 - d;
    }
    busy();
    st16(H.rx_avail + 2, H.rx_avail_idx);
    H.rx_published = H.kicked[0] = H.rx_avail_idx;
    st8(H.table + VDEV_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_DRIVER_OK);
    ring_bell(H.sock, &H.remote, H.notify[0], &H.bell);
    while (H.nns < endpoints) {
        if (now_ns() > deadline) {
            fprintf(stderr, "host: %u of %u announcements\n", H.nns, endpoints);
            return -1;
        }
        if (!process_rx(on_ns))
            wait_ring(0);
        flush();
    }
    (void)dir;
    for (int i = 0; i < 4; i++)
        if (!H.ept_addr[i]) {
            fprintf(stderr, "host: endpoint %d not announced\n", i);
            return -1;
        }
    return 0;
}

/* ---- modes ----------------------------------------------------------------------------------- */

static uint8_t last_msg[MAX_PAYLOAD];
static uint32_t last_len, got_count;
static uint64_t bad;

static void on_echo(uint32_t src, uint32_t dst, const uint8_t *p, uint32_t n)
{
    (void)src;
    (void)dst;
    memcpy(last_msg, p, n);
    last_len = n;
    got_count++;
}

static int run_rtt(double duration)
{
    size_t cap = 1 << 16, n = 0;
    uint32_t *s = malloc(cap * sizeof *s);
    uint8_t msg[16];
    memset(msg, 0xa5, sizeof msg);
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9);
    uint64_t w0 = H.wakeups, t0w = H.timeouts, l0w = H.lost_wakeups;
    for (uint32_t seq = 0; now_ns() < end || !n; seq++) {
        put_le32(msg + 4, seq);
        uint64_t a = now_ns();
        got_count = 0;
        while (!send_msg(H.ept_addr[0], msg, sizeof msg))
            wait_ring(1);
        flush();
        while (!got_count) {
            if (!process_rx(on_echo))
                wait_ring(0);
        }
        flush();
        uint64_t d = now_ns() - a;
        if (last_len != sizeof msg || memcmp(last_msg, msg, sizeof msg))
            bad++;
        if (n == cap) {
            cap *= 2;
            s = realloc(s, cap * sizeof *s);
        }
        s[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += s[i];
    sort_samples(s, n);
    printf("{\"mode\": \"rtt\", \"n\": %zu, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, "
           "\"mean_us\": %.2f, \"wakeups\": %llu, "
           "\"timeouts\": %llu, \"lost_wakeups\": %llu, \"bad\": %llu, \"lost\": 0}\n",
           n, pct_us(s, n, 0.5), pct_us(s, n, 0.9), pct_us(s, n, 0.99), pct_us(s, n, 1.0), sum / (double)n / 1000.0,
           (unsigned long long)(H.wakeups - w0),
           (unsigned long long)(H.timeouts - t0w), (unsigned long long)(H.lost_wakeups - l0w), (unsigned long long)bad);
    free(s);
    return bad ? 1 : 0;
}

static uint32_t expect_seq;

static void on_pipe(uint32_t src, uint32_t dst, const uint8_t *p, uint32_t n)
{
    (void)src;
    (void)dst;
    if (n != 16 || get_le32(p + 4) != expect_seq)
        bad++;
    expect_seq++;
}

static int run_pipe(double duration)
{
    uint8_t msg[16];
    memset(msg, 0x5a, sizeof msg);
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9), sent = 0;
    uint64_t w0 = H.wakeups, t0w = H.timeouts, l0w = H.lost_wakeups;
    expect_seq = 0;
    bad = 0;
    int sending = 1;
    while (sending || expect_seq < sent) {
        unsigned progress = process_rx(on_pipe);
        if (sending && now_ns() >= end)
            sending = 0;
        while (sending) {
            put_le32(msg + 4, (uint32_t)sent);
            if (!send_msg(H.ept_addr[0], msg, sizeof msg))
                break;
            sent++;
            progress++;
        }
        flush();
        if (!progress)
            wait_ring(sending && !H.ntx_free);
    }
    uint64_t t1 = now_ns();
    double secs = ns_to_s(t1 - t0);
    printf("{\"mode\": \"pipe\", \"sent\": %llu, \"received\": %u, \"msgs_per_s\": %.1f, \"wakeups\": %llu, "
           "\"timeouts\": %llu, \"lost_wakeups\": %llu, "
           "\"bad\": %llu, \"lost\": %lld}\n",
           (unsigned long long)sent, expect_seq, (double)expect_seq / secs, (unsigned long long)(H.wakeups - w0),
           (unsigned long long)(H.timeouts - t0w), (unsigned long long)(H.lost_wakeups - l0w),
           (unsigned long long)bad, (long long)sent - (long long)expect_seq);
    return bad ? 1 : 0;
}

static char stat_reply[64];
static int stat_got;

static void on_stat(uint32_t src, uint32_t dst, const uint8_t *p, uint32_t n)
{
    (void)dst;
    if (src != H.ept_addr[2] || n >= sizeof stat_reply)
        return;
    memcpy(stat_reply, p, n);
    stat_reply[n] = 0;
    stat_got = 1;
}

static int stat_sink(unsigned long long *m, unsigned long long *b)
{
    stat_got = 0;
    while (!send_msg(H.ept_addr[2], "STAT", 4))
        wait_ring(1);
    flush();
    while (!stat_got) {
        if (!process_rx(on_stat))
            wait_ring(0);
        flush();
    }
    return sscanf(stat_reply, "%llu %llu", m, b) == 2;
}

static int run_sink(double duration)
{
    uint8_t msg[MAX_PAYLOAD];
    memset(msg, 0x3c, sizeof msg);
    unsigned long long m0, b0, m1, b1;
    if (!stat_sink(&m0, &b0))
        return 1;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9), sent = 0;
    uint64_t w0 = H.wakeups, t0w = H.timeouts, l0w = H.lost_wakeups;
    while (now_ns() < end) {
        unsigned k = 0;
        while (send_msg(H.ept_addr[2], msg, sizeof msg))
            k++;
        sent += k;
        flush();
        if (!k)
            wait_ring(1);
    }
    int ok = stat_sink(&m1, &b1);
    uint64_t t1 = now_ns();
    double secs = ns_to_s(t1 - t0);
    long long lost = ok ? (long long)sent - (long long)(m1 - m0) : (long long)sent;
    printf("{\"mode\": \"sink\", \"sent\": %llu, \"counted\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, "
           "\"wakeups\": %llu, "
           "\"timeouts\": %llu, \"lost_wakeups\": %llu, \"bad\": %d, \"lost\": %lld}\n",
           (unsigned long long)sent, ok ? m1 - m0 : 0ull, (double)sent / secs,
           (double)sent * MAX_PAYLOAD / secs / 1e6, (unsigned long long)(H.wakeups - w0),
           (unsigned long long)(H.timeouts - t0w), (unsigned long long)(H.lost_wakeups - l0w),
           ok && b1 - b0 != (m1 - m0) * MAX_PAYLOAD, lost);
    return (!ok || lost) ? 1 : 0;
}

static uint64_t src_received;
static uint32_t src_seq, src_chunk = 5000;
static int src_done_chunks;

static void on_source(uint32_t src, uint32_t dst, const uint8_t *p, uint32_t n)
{
    (void)dst;
    if (src != H.ept_addr[3] || n != MAX_PAYLOAD || get_le32(p) != src_seq)
        bad++;
    src_received++;
    if (++src_seq == src_chunk) {
        src_seq = 0;
        src_done_chunks++;
    }
}

static int run_source(double duration)
{
    char req[32];
    int k = snprintf(req, sizeof req, "%u %u", src_chunk, MAX_PAYLOAD);
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9), requested = 0;
    uint64_t w0 = H.wakeups, t0w = H.timeouts, l0w = H.lost_wakeups;
    bad = 0;
    int inflight = 0;
    for (;;) {
        inflight -= src_done_chunks;
        src_done_chunks = 0;
        while (inflight < 2 && (now_ns() < end || !requested) && send_msg(H.ept_addr[3], req, (uint32_t)k)) {
            requested += src_chunk;
            inflight++;
        }
        flush();
        if (!inflight)
            break;
        unsigned got = process_rx(on_source);
        flush();
        if (!got)
            wait_ring(0);
    }
    uint64_t t1 = now_ns();
    double secs = ns_to_s(t1 - t0);
    printf("{\"mode\": \"source\", \"requested\": %llu, \"received\": %llu, \"msgs_per_s\": %.1f, "
           "\"mb_per_s\": %.3f, \"wakeups\": %llu, "
           "\"timeouts\": %llu, \"lost_wakeups\": %llu, \"bad\": %llu, \"lost\": %lld}\n",
           (unsigned long long)requested, (unsigned long long)src_received, (double)src_received / secs,
           (double)src_received * MAX_PAYLOAD / secs / 1e6, (unsigned long long)(H.wakeups - w0),
           (unsigned long long)(H.timeouts - t0w), (unsigned long long)(H.lost_wakeups - l0w),
           (unsigned long long)bad, (long long)requested - (long long)src_received);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *modes = "rtt,pipe,sink,source";
    double duration = 1.0;
    unsigned endpoints = 4;
    int ready = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--board") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--modes") && i + 1 < argc)
            modes = argv[++i];
        else if (!strcmp(argv[i], "--duration") && i + 1 < argc)
            duration = atof(argv[++i]);
        else if (!strcmp(argv[i], "--endpoints") && i + 1 < argc)
            endpoints = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--early-kick"))
            H.early = 1;
        else if (!strcmp(argv[i], "--ready"))
            ready = 1;
        else if (!strcmp(argv[i], "--remote-pid") && i + 1 < argc)
            H.remote_pid = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: host --board DIR [--modes rtt,pipe,sink,source] [--duration S] "
                            "[--endpoints N] [--early-kick] [--ready] [--remote-pid PID]\n");
            return 2;
        }
    }
    if (!dir)
        return 2;
    H.mem = map_board_memory(dir);
    if (!H.mem)
        return 1;
    if (set_sun(&H.remote, dir, "remote.sock") < 0)
        return 1;
    H.sock = bind_doorbell(dir, "host.sock");
    if (H.sock < 0 || set_blocking(H.sock) < 0 || set_bell_timeout(H.sock, 100) < 0 || attach(dir, endpoints) < 0)
        return 1;
    if (ready) { /* attached: say so, run when told, so that a counter can watch only the modes */
        printf("ready\n");
        fflush(stdout);
        char go[16];
        if (!fgets(go, sizeof go, stdin))
            return 1;
    }
    int rc = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", modes);
    for (char *save = NULL, *m = strtok_r(buf, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        if (!strcmp(m, "rtt"))
            rc |= run_rtt(duration);
        else if (!strcmp(m, "pipe"))
            rc |= run_pipe(duration);
        else if (!strcmp(m, "sink"))
            rc |= run_sink(duration);
        else if (!strcmp(m, "source"))
            rc |= run_source(duration);
        else {
            fprintf(stderr, "host: unknown mode %s\n", m);
            rc |= 2;
        }
        fflush(stdout);
    }
    if (ready) { /* and stay attached until stdin closes (the counter is switched off first) */
        char rest[64];
        while (fgets(rest, sizeof rest, stdin))
            ;
    }
    st8(H.table + VDEV_STATUS, 0); /* a host that exits cleanly writes status 0 and rings */
    ring_bell(H.sock, &H.remote, H.notify[0], &H.bell);
    close(H.sock);
    char path[sizeof H.remote.sun_path + 16];
    snprintf(path, sizeof path, "%s/host.sock", dir);
    unlink(path);
    return rc;
}
