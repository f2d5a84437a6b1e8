/* bench/pingpong.c -- the raw wake-up round trip of this machine: two processes
 * ping-ponging 4-byte datagrams over AF_UNIX SOCK_DGRAM sockets bound in DIR
 * (the same kind of socket as the board's doorbells), both sleeping in a
 * blocking recv().  The floor under any echo through rprocd, which needs four
 * such wake-ups (client -> daemon -> remote -> daemon -> client).
 *
 *   pingpong DIR [--duration S] [--cpus A,B]
 *
 * prints one JSON line: p50/p90/p99/max of a round trip.  --cpus pins the ping
 * side to CPU A and the pong side to CPU B: A == B measures a wake-up on the
 * same CPU (a context switch), A != B one across CPUs (an IPI; on a VM, waking
 * a halted vCPU), the two costs everything in rprocd's path pays.
 */
#include "common.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

static int bound(const char *dir, const char *name, struct sockaddr_un *sa)
{
    if (set_sun(sa, dir, name) < 0)
        return -1;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    unlink(sa->sun_path);
    if (s < 0 || bind(s, (struct sockaddr *)sa, sizeof *sa) < 0)
        return -1;
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *dir = argv[1];
    double duration = 1.0;
    int cpu_a = -1, cpu_b = -1;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--duration"))
            duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--cpus") && sscanf(argv[i + 1], "%d,%d", &cpu_a, &cpu_b) == 2)
            ;
        else {
            fprintf(stderr, "usage: pingpong DIR [--duration S] [--cpus A,B]\n");
            return 2;
        }
    }
    struct sockaddr_un a, b;
    int sa = bound(dir, "ping.sock", &a), sb = bound(dir, "pong.sock", &b);
    if (sa < 0 || sb < 0) {
        perror("bind");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) { /* pong: answer every word */
        pin(cpu_b);
        close(sa);
        uint8_t w[4];
        for (;;) {
            ssize_t n = recv(sb, w, sizeof w, 0);
            if (n == 4 && get_le32(w) == 0xffffffffu)
                _exit(0);
            if (n == 4)
                sendto(sb, w, 4, 0, (struct sockaddr *)&a, sizeof a);
        }
    }
    pin(cpu_a);
    close(sb);
    size_t cap = 1 << 16, n = 0;
    uint32_t *s = malloc(cap * sizeof *s);
    uint8_t w[4];
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(duration * 1e9);
    for (uint32_t i = 0; now_ns() < end || n < 1000; i++) {
        put_le32(w, i & 0x7fffffff);
        uint64_t x = now_ns();
        if (sendto(sa, w, 4, 0, (struct sockaddr *)&b, sizeof b) != 4 || recv(sa, w, 4, 0) != 4) {
            perror("pingpong");
            kill(child, SIGKILL);
            return 1;
        }
        uint64_t d = now_ns() - x;
        if (i >= 200) { /* warm-up */
            if (n == cap) {
                cap *= 2;
                s = realloc(s, cap * sizeof *s);
            }
            s[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        }
    }
    put_le32(w, 0xffffffffu);
    sendto(sa, w, 4, 0, (struct sockaddr *)&b, sizeof b);
    waitpid(child, NULL, 0);
    unlink(a.sun_path);
    unlink(b.sun_path);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += s[i];
    sort_samples(s, n);
    printf("{\"n\": %zu, \"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, \"mean_us\": %.2f}\n",
           n, pct_us(s, n, 0.5), pct_us(s, n, 0.9), pct_us(s, n, 0.99), pct_us(s, n, 1.0), sum / (double)n / 1000.0);
    free(s);
    return 0;
}
