/* bench/client.c -- load generator for rprocd's endpoint sockets (SOCK_SEQPACKET).
 *
 *   client MODE PATH [--duration S] [--size N] [--tag T] [--chunk C] [--cpu N] [--ready]
 *
 * MODE
 *   rtt     ping-pong: send one message, wait for its echo, repeat (latency samples)
 *   pipe    pipelined echo: a sender thread and a receiver thread on the same socket
 *   sink    stream messages into rpmsg-sink, then "STAT": the count must match
 *   source  ask rpmsg-source for "<chunk> <size>" (two requests in flight), check every
 *           message's length and 0-based sequence number
 *
 * Echo payloads carry the client's tag and a sequence number (LE u32 each), so
 * clients that share an endpoint (every client gets every message, per the
 * socket contract) recognise their own echoes and ignore the others'.
 *
 * --ready: connect, print "ready" and wait for a line (or EOF) on stdin before
 * starting, so that many clients start together.  Runs for --duration seconds
 * (then drains what is in flight) and prints one JSON line.  Blocking sockets,
 * a receive timeout of 10 s: a lost message is reported (exit status 1), never
 * waited for forever.
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/time.h>

static const char *mode, *path;
static double duration = 1.0;
static unsigned size = 16, tag, chunk = 5000;
static int ready, cpu = -1;
static int fd;

static void die(const char *what)
{
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    exit(2);
}

static void usage(void)
{
    fprintf(stderr, "usage: client rtt|pipe|sink|source PATH [--duration S] [--size N] [--tag T] [--chunk C] "
                    "[--cpu N] [--ready]\n");
    exit(2);
}

/* ---- rtt ------------------------------------------------------------------------------ */

static int run_rtt(void)
{
    size_t cap = 1 << 16, n = 0;
    uint32_t *samples = malloc(cap * sizeof *samples);
    uint8_t msg[MAX_PAYLOAD], in[MAX_PAYLOAD + 1];
    memset(msg, 0xa5, sizeof msg);
    put_le32(msg, tag);
    uint64_t foreign = 0, bad = 0, lost = 0;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9), t1 = t0;
    for (uint32_t seq = 0;; seq++) {
        put_le32(msg + 4, seq);
        uint64_t a = now_ns();
        if (a >= end && n)
            break;
        if (send(fd, msg, size, 0) != (ssize_t)size)
            die("send");
        for (;;) {
            ssize_t got = recv(fd, in, sizeof in, 0);
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                lost++;
                goto done;
            }
            if (got == 0 && size) {
                lost++;
                goto done;
            }
            if (got >= 8 && get_le32(in) != tag) {
                foreign++;
                continue;
            }
            if ((size_t)got != size || memcmp(in, msg, size) != 0)
                bad++;
            break;
        }
        t1 = now_ns();
        if (n == cap) {
            cap *= 2;
            samples = realloc(samples, cap * sizeof *samples);
        }
        uint64_t d = t1 - a;
        samples[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    }
done:;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += samples[i];
    sort_samples(samples, n);
    printf("{\"mode\": \"rtt\", \"n\": %zu, \"size\": %u, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, "
           "\"max_us\": %.2f, \"mean_us\": %.2f, \"t0\": %.6f, \"t1\": %.6f, \"msgs\": %zu, \"foreign\": %llu, "
           "\"bad\": %llu, \"lost\": %llu}\n",
           n, size, pct_us(samples, n, 0.5), pct_us(samples, n, 0.9), pct_us(samples, n, 0.99),
           pct_us(samples, n, 1.0), n ? sum / (double)n / 1000.0 : 0.0, ns_to_s(t0), ns_to_s(t1), 2 * n,
           (unsigned long long)foreign, (unsigned long long)bad, (unsigned long long)lost);
    free(samples);
    return (bad || lost) ? 1 : 0;
}

/* ---- pipe ------------------------------------------------------------------------------ */

static volatile uint64_t pipe_sent;
static volatile int pipe_done;

static void *pipe_sender(void *arg)
{
    (void)arg;
    uint8_t msg[MAX_PAYLOAD];
    memset(msg, 0x5a, sizeof msg);
    put_le32(msg, tag);
    uint64_t end = now_ns() + (uint64_t)(duration * 1e9), sent = 0;
    for (;;) {
        if ((sent & 63) == 0 && now_ns() >= end)
            break;
        put_le32(msg + 4, (uint32_t)sent);
        if (send(fd, msg, size, 0) != (ssize_t)size) {
            if (errno == EINTR)
                continue;
            break;
        }
        sent++;
        __atomic_store_n(&pipe_sent, sent, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&pipe_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int run_pipe(void)
{
    pthread_t th;
    uint8_t in[MAX_PAYLOAD + 1];
    uint64_t got_own = 0, foreign = 0, bad = 0, lost = 0, first_bad_expected = 0, first_bad_got = 0;
    uint64_t t0 = now_ns(), t1 = t0;
    if (pthread_create(&th, NULL, pipe_sender, NULL))
        die("pthread_create");
    /* A short receive timeout: the receiver may block after the last echo, before the
     * sender has said it is done; a 10 s silence is a loss. */
    struct timeval tv = {.tv_usec = 20000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint64_t last = t0;
    for (;;) {
        if (__atomic_load_n(&pipe_done, __ATOMIC_ACQUIRE) && got_own >= __atomic_load_n(&pipe_sent, __ATOMIC_ACQUIRE))
            break;
        ssize_t got = recv(fd, in, sizeof in, 0);
        if (got < 0) {
            if (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) && now_ns() - last < 10000000000ull))
                continue;
            lost = __atomic_load_n(&pipe_sent, __ATOMIC_ACQUIRE) - got_own;
            break;
        }
        last = now_ns();
        if (got < 8) {
            bad++;
            continue;
        }
        if (get_le32(in) != tag) {
            foreign++;
            continue;
        }
        if ((size_t)got != size || get_le32(in + 4) != (uint32_t)got_own) {
            if (!bad++) {
                first_bad_expected = got_own;
                first_bad_got = get_le32(in + 4);
            }
        }
        got_own++;
        t1 = now_ns();
    }
    pthread_join(th, NULL);
    double secs = ns_to_s(t1 - t0);
    printf("{\"mode\": \"pipe\", \"size\": %u, \"sent\": %llu, \"received\": %llu, \"msgs\": %llu, "
           "\"msgs_per_s\": %.1f, \"t0\": %.6f, \"t1\": %.6f, \"foreign\": %llu, \"bad\": %llu, \"lost\": %llu, "
           "\"first_bad\": [%llu, %llu]}\n",
           size, (unsigned long long)pipe_sent, (unsigned long long)got_own, (unsigned long long)(2 * got_own),
           secs > 0 ? (double)got_own / secs : 0.0, ns_to_s(t0), ns_to_s(t1), (unsigned long long)foreign,
           (unsigned long long)bad, (unsigned long long)lost, (unsigned long long)first_bad_expected,
           (unsigned long long)first_bad_got);
    return (bad || lost) ? 1 : 0;
}

/* ---- sink --------------------------------------------------------------------------------- */

static int stat_sink(unsigned long long *msgs, unsigned long long *bytes)
{
    char in[MAX_PAYLOAD + 1];
    if (send(fd, "STAT", 4, 0) != 4)
        return 0;
    ssize_t got = recv(fd, in, sizeof in - 1, 0);
    if (got <= 0)
        return 0;
    in[got] = 0;
    return sscanf(in, "%llu %llu", msgs, bytes) == 2;
}

static int run_sink(void)
{
    uint8_t msg[MAX_PAYLOAD];
    memset(msg, 0x3c, sizeof msg);
    if (size == 4)
        msg[0] = 'X'; /* never "STAT" */
    unsigned long long m0, b0, m1 = 0, b1 = 0;
    if (!stat_sink(&m0, &b0))
        die("first STAT");
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9), sent = 0;
    for (;;) {
        if ((sent & 63) == 0 && now_ns() >= end)
            break;
        if (send(fd, msg, size, 0) != (ssize_t)size) {
            if (errno == EINTR)
                continue;
            die("send");
        }
        sent++;
    }
    int ok = stat_sink(&m1, &b1);
    uint64_t t1 = now_ns();
    unsigned long long counted = ok ? m1 - m0 : 0, counted_bytes = ok ? b1 - b0 : 0;
    long long lost = ok ? (long long)sent - (long long)counted : (long long)sent;
    double secs = ns_to_s(t1 - t0);
    printf("{\"mode\": \"sink\", \"size\": %u, \"sent\": %llu, \"counted\": %llu, \"counted_bytes\": %llu, "
           "\"msgs\": %llu, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"t0\": %.6f, \"t1\": %.6f, \"bad\": %d, "
           "\"lost\": %lld}\n",
           size, (unsigned long long)sent, counted, counted_bytes, (unsigned long long)sent,
           secs > 0 ? (double)sent / secs : 0.0, secs > 0 ? (double)sent * size / secs / 1e6 : 0.0, ns_to_s(t0),
           ns_to_s(t1), (ok && counted_bytes != counted * size) ? 1 : 0, lost);
    return (!ok || lost || counted_bytes != counted * size) ? 1 : 0;
}

/* ---- source --------------------------------------------------------------------------------- */

static int run_source(void)
{
    char req[64];
    int k = snprintf(req, sizeof req, "%u %u", chunk, size);
    uint8_t in[MAX_PAYLOAD + 1];
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9), t1 = t0;
    uint64_t requested = 0, received = 0, bad = 0, lost = 0;
    uint32_t seq = 0; /* within the current chunk */
    int inflight = 0;
    for (;;) {
        while (inflight < 2 && (now_ns() < end || requested == 0)) {
            if (send(fd, req, (size_t)k, 0) != k)
                die("send");
            requested += chunk;
            inflight++;
        }
        if (!inflight)
            break;
        ssize_t got = recv(fd, in, sizeof in, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            lost = requested - received;
            break;
        }
        if ((size_t)got != size || get_le32(in) != seq)
            bad++;
        received++;
        t1 = now_ns();
        if (++seq == chunk) {
            seq = 0;
            inflight--;
        }
    }
    double secs = ns_to_s(t1 - t0);
    printf("{\"mode\": \"source\", \"size\": %u, \"requested\": %llu, \"received\": %llu, \"msgs\": %llu, "
           "\"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"t0\": %.6f, \"t1\": %.6f, \"bad\": %llu, \"lost\": %llu}\n",
           size, (unsigned long long)requested, (unsigned long long)received, (unsigned long long)received,
           secs > 0 ? (double)received / secs : 0.0, secs > 0 ? (double)received * size / secs / 1e6 : 0.0,
           ns_to_s(t0), ns_to_s(t1), (unsigned long long)bad, (unsigned long long)lost);
    return (bad || lost) ? 1 : 0;
}

/* With --ready: stay connected, reading (and dropping) whatever still comes, until stdin
 * closes.  Clients that share an endpoint get each other's echoes: one that left early
 * would change what the others measure (and a client closing while the daemon delivers
 * to the others is a case of its own, not a load to measure). */
static void linger(void)
{
    uint8_t in[MAX_PAYLOAD + 1];
    struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, 60000) <= 0)
            return;
        if (p[0].revents) {
            char c;
            if (read(0, &c, 1) <= 0)
                return;
        }
        if (p[1].revents & POLLIN) {
            if (recv(fd, in, sizeof in, MSG_DONTWAIT) == 0)
                return;
        } else if (p[1].revents)
            return;
    }
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    mode = argv[1];
    path = argv[2];
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--duration") && i + 1 < argc)
            duration = atof(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            size = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tag") && i + 1 < argc)
            tag = (unsigned)strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cpu") && i + 1 < argc)
            cpu = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ready"))
            ready = 1;
        else
            usage();
    }
    int echo = !strcmp(mode, "rtt") || !strcmp(mode, "pipe");
    if (size > MAX_PAYLOAD || (echo && size < 8) || (!strcmp(mode, "source") && size < 4) || !chunk)
        usage();

    if (cpu >= 0) { /* pinned (threads inherit it) */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0)
            die("sched_setaffinity");
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path)
        usage();
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (ready) {
        printf("ready\n");
        fflush(stdout);
        char c;
        while (read(0, &c, 1) == 1 && c != '\n') /* a line, or EOF, starts us */
            ;
    }
    int rc;
    if (!strcmp(mode, "rtt"))
        rc = run_rtt();
    else if (!strcmp(mode, "pipe"))
        rc = run_pipe();
    else if (!strcmp(mode, "sink"))
        rc = run_sink();
    else if (!strcmp(mode, "source"))
        rc = run_source();
    else
        usage(), rc = 2;
    fflush(stdout);
    if (ready)
        linger();
    close(fd);
    return rc;
}
