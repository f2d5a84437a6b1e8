/* Shared by the bench programs: the tcc807x board layout of shared/sim-board.md,
 * shared-memory access rules (DESIGN.md), the doorbell, clocks and statistics.
 *
 * Every shared index or flag is one naturally aligned load or store of its own
 * width (__atomic builtins); entries are written before the index that
 * publishes them (release) and read after the index that covers them (acquire).
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- the default layout (tcc807x self-boot) --------------------------------------- */
#define WIN_PA 0x200c6000u
#define WIN_SIZE 0x8000u
#define TREGION_PA 0x200c6000u
#define TREGION_SIZE 0x2000u
#define TABLE_PA 0x200c63b8u
#define RSC_SIZE 0x1000u
#define VRING0_PA 0x200c8000u
#define VRING1_PA 0x200c9000u
#define BUF_PA 0x200ca000u
#define BUF_LEN 0x4000u
#define BUF_SIZE 512u
#define HDR_SIZE 16u
#define MAX_PAYLOAD (BUF_SIZE - HDR_SIZE)
#define VR_NUM 8u
#define VR_ALIGN 16u
#define TRACE_PA 0x200c7400u /* (table + rsc_size + 0xff) & ~0xff, as the Python sim */
#define TRACE_LEN 0xc00u     /* up to the end of the table region */

/* resource table (version 1): header 16, offsets[2], vdev at 0x18, trace at 0x5c */
#define RSC_VDEV 3u
#define RSC_TRACE 2u
#define VIRTIO_ID_RPMSG 7u
#define VDEV_OFF 0x18u
#define VDEV_GFEATURES (VDEV_OFF + 16u)
#define VDEV_STATUS (VDEV_OFF + 24u)
#define VDEV_NUM_VRINGS (VDEV_OFF + 25u)
#define VDEV_VRING(i) (VDEV_OFF + 28u + 20u * (i)) /* da, align, num, notifyid, reserved */
#define TRACE_OFF 0x5cu
#define TABLE_LEN 140u

#define S_ACKNOWLEDGE 1u
#define S_DRIVER 2u
#define S_DRIVER_OK 4u
#define S_NEEDS_RESET 0x40u
#define FW_RSC_ADDR_ANY 0xffffffffu
#define F_NS 1u /* 1 << VIRTIO_RPMSG_F_NS */

#define VRING_DESC_F_NEXT 1u
#define VRING_DESC_F_WRITE 2u
#define VRING_DESC_F_INDIRECT 4u
#define VRING_USED_F_NO_NOTIFY 1u
#define VRING_AVAIL_F_NO_INTERRUPT 1u

#define RPMSG_NS_ADDR 53u
#define RPMSG_FIRST_ADDR 1024u

/* split ring offsets for num 8, align 16 (vring_init): desc 0, avail 128, used 160, size 230 */
#define VR_AVAIL_OFF (16u * VR_NUM)
#define VR_USED_OFF ((VR_AVAIL_OFF + 2u * (3u + VR_NUM) + VR_ALIGN - 1u) & ~(VR_ALIGN - 1u))
#define VR_SIZE (VR_USED_OFF + 6u + 8u * VR_NUM)

static inline uint16_t ld16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline uint32_t ld32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE); }
static inline uint8_t ld8(const void *p) { return __atomic_load_n((const uint8_t *)p, __ATOMIC_ACQUIRE); }
static inline void st16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline void st32(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE); }
static inline void st8(void *p, uint8_t v) { __atomic_store_n((uint8_t *)p, v, __ATOMIC_RELEASE); }
/* A store followed by a load of another location (flag, then index): needs a full fence. */
static inline void full_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double ns_to_s(uint64_t ns) { return (double)ns / 1e9; }

/* ---- the board folder -------------------------------------------------------------- */

/* Open (creating or growing, never truncating) D/memory and map it shared. */
static inline uint8_t *map_board_memory(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/memory", dir);
    mkdir(dir, 0770);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0660);
    if (fd < 0) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size < (off_t)WIN_SIZE && ftruncate(fd, WIN_SIZE) != 0) {
        fprintf(stderr, "cannot grow %s: %s\n", path, strerror(errno));
        close(fd);
        return NULL;
    }
    void *m = mmap(NULL, WIN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        fprintf(stderr, "cannot map %s: %s\n", path, strerror(errno));
        return NULL;
    }
    return m;
}

static inline int set_sun(struct sockaddr_un *sa, const char *dir, const char *name)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= sizeof sa->sun_path) ? -1 : 0;
}

/* Bind our doorbell socket (DGRAM, non-blocking), replacing a stale one. */
static inline int bind_doorbell(const char *dir, const char *name)
{
    struct sockaddr_un sa;
    if (set_sun(&sa, dir, name) < 0) {
        fprintf(stderr, "board path too long: %s/%s\n", dir, name);
        return -1;
    }
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return -1;
    unlink(sa.sun_path);
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "cannot bind %s: %s\n", sa.sun_path, strerror(errno));
        close(s);
        return -1;
    }
    return s;
}

struct bell_stats {
    uint64_t sent, lost, dropped, errors, received, noise;
};

/* One ring: a 4-byte LE word, MSG_DONTWAIT; a full peer queue or an absent peer loses it. */
static inline void ring_bell(int sock, const struct sockaddr_un *peer, uint32_t word, struct bell_stats *st)
{
    uint8_t w[4] = {(uint8_t)word, (uint8_t)(word >> 8), (uint8_t)(word >> 16), (uint8_t)(word >> 24)};
    if (sendto(sock, w, 4, MSG_DONTWAIT, (const struct sockaddr *)peer, sizeof *peer) == 4) {
        st->sent++;
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        st->dropped++;
    else if (errno == ENOENT || errno == ECONNREFUSED || errno == ENOTCONN)
        st->lost++;
    else
        st->errors++;
}

/* Read every queued ring; returns how many valid words arrived. */
static inline unsigned drain_bell(int sock, struct bell_stats *st)
{
    unsigned n = 0;
    uint8_t buf[64];
    for (;;) {
        ssize_t got = recv(sock, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (got == 4)
            n++;
        else
            st->noise++;
    }
    st->received += n;
    return n;
}

/* How long wait_bells() may sleep before it looks at the rings anyway (a safety net for a
 * lost ring); the socket must be blocking (set_blocking) for the wait to sleep at all. */
static inline int set_bell_timeout(int sock, long ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static inline int set_blocking(int sock)
{
    int fl = fcntl(sock, F_GETFL);
    return fl < 0 ? -1 : fcntl(sock, F_SETFL, fl & ~O_NONBLOCK);
}

/* Sleep until a ring comes (or the socket's timeout passes) and take every queued ring with
 * it: one recvmmsg(MSG_WAITFORONE) does the wait and the drain, where poll() + recv() until
 * EAGAIN costs three syscalls or more per wake-up.  block == 0: only take what is queued.
 * Returns how many valid words arrived (0 on a timeout, a signal, or nothing queued). */
#define BELL_BATCH 16
static inline unsigned wait_bells(int sock, int block, struct bell_stats *st)
{
    static uint8_t bufs[BELL_BATCH][8];
    static struct iovec iov[BELL_BATCH];
    static struct mmsghdr msgs[BELL_BATCH];
    unsigned n = 0;
    for (;;) {
        for (unsigned i = 0; i < BELL_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(sock, msgs, BELL_BATCH, block ? MSG_WAITFORONE : MSG_DONTWAIT, NULL);
        if (got <= 0)
            break;
        for (int i = 0; i < got; i++) {
            if (msgs[i].msg_len == 4 && !(msgs[i].msg_hdr.msg_flags & MSG_TRUNC))
                n++;
            else
                st->noise++;
        }
        if (got < (int)BELL_BATCH)
            break;
        block = 0; /* a full batch: more may be queued */
    }
    st->received += n;
    return n;
}

/* ---- latency samples ----------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* p in [0, 1]; samples get sorted in place.  Nearest-rank on the sorted samples. */
static inline double pct_us(uint32_t *ns, size_t n, double p)
{
    if (!n)
        return 0.0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return ns[i] / 1000.0;
}

static inline void sort_samples(uint32_t *ns, size_t n) { qsort(ns, n, sizeof *ns, cmp_u32); }

static inline void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
