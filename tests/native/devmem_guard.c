/* devmem_guard: LD_PRELOAD shim that fails a process whose libc bulk routines
 * touch shared memory.
 *
 * On the board the shared window is Device memory (arm64 Device-nGnRnE):
 * glibc's aarch64 memcpy/memmove end with overlapping wide accesses at
 * dst + n - 8, memset uses DC ZVA for large fills, memcmp/bcmp load wide
 * and unaligned: any of them may fault there.  rprocd must reach the window
 * only through rprocd/memory.py's aligned accesses and device copies.
 *
 * The shim learns the window by watching mmap(): a mapping of a UIO device
 * (an fd whose node is /dev/uioN, or a socket named uioN: the fake UIO of
 * tests/fake_uio.py) or of a file listed in DEVMEM_GUARD_PATHS (':'
 * separated) is guarded until munmap().  Then every memcpy, memmove, memset,
 * mempcpy, memcmp, bcmp, bzero and their __*_chk variants whose source or
 * destination range touches a guarded mapping is reported (stderr and the
 * file DEVMEM_GUARD_REPORT, if set) and the process aborts (unless
 * DEVMEM_GUARD_NOABORT is set; then calls are only counted in the report).
 * With PYTHONFAULTHANDLER=1 the abort prints the Python stack.  Each guarded
 * mapping is announced on stderr ("devmem_guard: guarding ..."), so a test
 * can tell that the guard saw the window at all.
 *
 * Calls inside libc itself use internal aliases and are not seen; what
 * CPython and extension modules call is.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXR 64

static volatile uintptr_t lo[MAXR], hi[MAXR];
static volatile int nr;

typedef void *(*cpy_t)(void *, const void *, size_t);
typedef void *(*set_t)(void *, int, size_t);
typedef int (*cmp_t)(const void *, const void *, size_t);
static cpy_t r_memcpy, r_memmove, r_mempcpy;
static set_t r_memset;
static cmp_t r_memcmp, r_bcmp;
static void *(*r_mmap)(void *, size_t, int, int, int, off_t);
static int (*r_munmap)(void *, size_t);

/* used only until dlsym has answered (it may allocate, and calloc memsets) */
static void *slow_copy(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;
	if (dp < sp)
		while (n--)
			*dp++ = *sp++;
	else
		while (n--)
			dp[n] = sp[n];
	return d;
}

static void *slow_set(void *d, int c, size_t n)
{
	unsigned char *dp = d;
	while (n--)
		*dp++ = (unsigned char)c;
	return d;
}

static int slow_cmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

__attribute__((constructor)) static void init(void)
{
	r_memcpy = dlsym(RTLD_NEXT, "memcpy");
	r_memmove = dlsym(RTLD_NEXT, "memmove");
	r_mempcpy = dlsym(RTLD_NEXT, "mempcpy");
	r_memset = dlsym(RTLD_NEXT, "memset");
	r_memcmp = dlsym(RTLD_NEXT, "memcmp");
	r_bcmp = dlsym(RTLD_NEXT, "bcmp");
	r_mmap = dlsym(RTLD_NEXT, "mmap");
	r_munmap = dlsym(RTLD_NEXT, "munmap");
}

static int touches(const void *p, size_t n)
{
	uintptr_t a = (uintptr_t)p;
	int k = nr;

	if (!n)
		return -1;
	for (int i = 0; i < k; i++)
		if (a < hi[i] && a + n > lo[i])
			return i;
	return -1;
}

static void say(const char *msg, size_t len)
{
	const char *rep = getenv("DEVMEM_GUARD_REPORT");

	if (write(2, msg, len) < 0) {
	}
	if (rep) {
		int fd = open(rep, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd >= 0) {
			if (write(fd, msg, len) < 0) {
			}
			close(fd);
		}
	}
}

static void violation(const char *fn, const void *dst, const void *src, size_t n, int which)
{
	char msg[512];
	int len = snprintf(msg, sizeof(msg),
			   "devmem_guard: %s(dst=%p, src=%p, n=%zu) touches shared memory %#lx-%#lx: "
			   "no libc bulk routine may touch Device memory (use rprocd.memory)\n",
			   fn, dst, src, n, (unsigned long)lo[which], (unsigned long)hi[which]);
	say(msg, len > 0 && (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1);
	if (!getenv("DEVMEM_GUARD_NOABORT"))
		abort();
}

#define CHECK2(fn, d, s, n)                                               \
	do {                                                              \
		int w_ = touches(d, n);                                   \
		if (w_ < 0)                                               \
			w_ = touches(s, n);                               \
		if (w_ >= 0)                                              \
			violation(fn, d, s, n, w_);                       \
	} while (0)

void *memcpy(void *d, const void *s, size_t n)
{
	CHECK2("memcpy", d, s, n);
	return r_memcpy ? r_memcpy(d, s, n) : slow_copy(d, s, n);
}

void *memmove(void *d, const void *s, size_t n)
{
	CHECK2("memmove", d, s, n);
	return r_memmove ? r_memmove(d, s, n) : slow_copy(d, s, n);
}

void *mempcpy(void *d, const void *s, size_t n)
{
	CHECK2("mempcpy", d, s, n);
	return r_mempcpy ? r_mempcpy(d, s, n) : (char *)slow_copy(d, s, n) + n;
}

void *memset(void *d, int c, size_t n)
{
	CHECK2("memset", d, (const void *)0, n);
	return r_memset ? r_memset(d, c, n) : slow_set(d, c, n);
}

void bzero(void *d, size_t n)
{
	CHECK2("bzero", d, (const void *)0, n);
	if (r_memset)
		r_memset(d, 0, n);
	else
		slow_set(d, 0, n);
}

int memcmp(const void *a, const void *b, size_t n)
{
	CHECK2("memcmp", a, b, n);
	return r_memcmp ? r_memcmp(a, b, n) : slow_cmp(a, b, n);
}

int bcmp(const void *a, const void *b, size_t n)
{
	CHECK2("bcmp", a, b, n);
	return r_bcmp ? r_bcmp(a, b, n) : slow_cmp(a, b, n);
}

void *__memcpy_chk(void *d, const void *s, size_t n, size_t dn)
{
	(void)dn;
	CHECK2("__memcpy_chk", d, s, n);
	return r_memcpy ? r_memcpy(d, s, n) : slow_copy(d, s, n);
}

void *__memmove_chk(void *d, const void *s, size_t n, size_t dn)
{
	(void)dn;
	CHECK2("__memmove_chk", d, s, n);
	return r_memmove ? r_memmove(d, s, n) : slow_copy(d, s, n);
}

void *__mempcpy_chk(void *d, const void *s, size_t n, size_t dn)
{
	(void)dn;
	CHECK2("__mempcpy_chk", d, s, n);
	return r_mempcpy ? r_mempcpy(d, s, n) : (char *)slow_copy(d, s, n) + n;
}

void *__memset_chk(void *d, int c, size_t n, size_t dn)
{
	(void)dn;
	CHECK2("__memset_chk", d, (const void *)0, n);
	return r_memset ? r_memset(d, c, n) : slow_set(d, c, n);
}

static int uio_name(const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	if (strncmp(base, "uio", 3) || !base[3])
		return 0;
	for (const char *p = base + 3; *p; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return 1;
}

static int guarded_fd(int fd)
{
	struct sockaddr_un sa;
	socklen_t sl = sizeof(sa);
	char link[64], path[4096];
	const char *list;
	ssize_t n;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return 0;
	if (S_ISSOCK(st.st_mode)) {
		slow_set(&sa, 0, sizeof(sa));
		return getpeername(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sun_family == AF_UNIX &&
		       uio_name(sa.sun_path);
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return 0;
	path[n] = 0;
	if (S_ISCHR(st.st_mode) && uio_name(path))
		return 1; /* a real /dev/uioN */
	list = getenv("DEVMEM_GUARD_PATHS");
	while (list && *list) {
		const char *end = strchr(list, ':');
		size_t len = end ? (size_t)(end - list) : strlen(list);
		if (len == (size_t)n && !strncmp(list, path, len))
			return 1;
		list = end ? end + 1 : NULL;
	}
	return 0;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p;

	if (!r_mmap)
		init();
	p = r_mmap(addr, len, prot, flags, fd, off);
	if (p != MAP_FAILED && nr < MAXR && guarded_fd(fd)) {
		char msg[128];
		int n;

		lo[nr] = (uintptr_t)p;
		hi[nr] = (uintptr_t)p + len;
		__sync_synchronize();
		nr++;
		n = snprintf(msg, sizeof(msg), "devmem_guard: guarding %#lx-%#lx\n", (unsigned long)p,
			     (unsigned long)p + len);
		if (n > 0 && write(2, msg, (size_t)n) < 0) {
		}
	}
	return p;
}
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) __attribute__((alias("mmap")));

int munmap(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;

	if (!r_munmap)
		init();
	for (int i = 0; i < nr; i++)
		if (a < hi[i] && a + len > lo[i])
			lo[i] = hi[i] = 0; /* an empty range: never touched */
	return r_munmap(addr, len);
}
