/* The kernel half of tests/fake_uio.py: what drivers/uio/uio.c does for a
 * file descriptor of /dev/uioN, for a process run with LD_PRELOAD.
 *
 * A fake node is a SOCK_SEQPACKET socket named uioN, served by the fake's
 * Python "kernel" thread (tests/fake_uio.py).  open() of a socket fails with
 * ENXIO; this shim then connects to it, gets the device description (irq or
 * not, the maps and the files behind them), and the process holds an fd that
 * behaves like a UIO fd:
 *
 *   uio_open   the listener's event count is sampled at open (the server
 *              registers the listener during open's handshake);
 *   uio_read   count != 4 -> EINVAL, then no irq -> EIO; otherwise the
 *              latest event count once it differs from the listener's
 *              (two interrupts between reads give one read of the latest
 *              count), EAGAIN with O_NONBLOCK, else block;
 *   uio_poll   readable while an event is unread (epoll works on the socket);
 *   uio_write  count != 4 -> EINVAL, then no irq -> EIO, else irqcontrol
 *              (synchronous: the server has applied it when write returns);
 *   uio_mmap   offset N * page selects map N (uio_find_mem_index): EINVAL
 *              for N >= MAX_UIO_MAPS or a map of size 0, and EINVAL for a
 *              length past the map (requested_pages > actual_pages); the
 *              pages come from the map's backing file, MAP_SHARED, so a
 *              simulated remote that maps the same file shares them.
 *
 * Everything else about the fd is a socket's; rprocd does not use the rest.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_UIO_MAPS 5
#define MAXFD 65536
#define MAXDEV 64

struct fmap {
	unsigned long size; /* sysfs size: what may be mapped */
	long boff;          /* offset of the map's first page in the backing file */
	int bfd;
};

struct fdev {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int irq;
	int nmaps;
	struct fmap maps[MAX_UIO_MAPS];
};

static struct fdev devs[MAXDEV];
static int ndevs;
static unsigned char marks[MAXFD]; /* device index + 1 for a fake fd */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_close)(int);

static void resolve(void)
{
	if (real_open)
		return;
	real_openat = dlsym(RTLD_NEXT, "openat");
	real_read = dlsym(RTLD_NEXT, "read");
	real_write = dlsym(RTLD_NEXT, "write");
	real_mmap = dlsym(RTLD_NEXT, "mmap");
	real_close = dlsym(RTLD_NEXT, "close");
	real_open = dlsym(RTLD_NEXT, "open");
}

static struct fdev *dev_of(int fd)
{
	if (fd < 0 || fd >= MAXFD || !marks[fd])
		return NULL;
	return &devs[marks[fd] - 1];
}

static int is_fake_node(const char *path)
{
	struct stat st;
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	if (strncmp(base, "uio", 3) || !base[3])
		return 0;
	for (const char *p = base + 3; *p; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

static int connect_node(const char *path, int cloexec)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | (cloexec ? SOCK_CLOEXEC : 0), 0);
	if (s < 0)
		return -1;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		real_close(s);
		errno = e == ECONNREFUSED ? ENODEV : e; /* the device went away */
		return -1;
	}
	return s;
}

/* open() of a fake node: handshake, then a listener fd */
static int fake_open(const char *path, int flags)
{
	char buf[4096], *line, *save;
	int s, irq, nmaps, idx = -1;
	ssize_t n;

	s = connect_node(path, flags & O_CLOEXEC);
	if (s < 0)
		return -1;
	if (send(s, "O", 1, 0) != 1 || (n = recv(s, buf, sizeof(buf) - 1, 0)) <= 0) {
		real_close(s);
		errno = ENODEV;
		return -1;
	}
	buf[n] = 0;
	line = strtok_r(buf, "\n", &save);
	if (!line || sscanf(line, "I %d %d", &irq, &nmaps) != 2 || nmaps > MAX_UIO_MAPS) {
		real_close(s);
		errno = ENODEV;
		return -1;
	}
	pthread_mutex_lock(&lock);
	for (int i = 0; i < ndevs; i++)
		if (!strcmp(devs[i].path, path))
			idx = i;
	if (idx < 0 && ndevs < MAXDEV) {
		struct fdev *d = &devs[ndevs];

		memset(d, 0, sizeof(*d));
		snprintf(d->path, sizeof(d->path), "%s", path);
		d->irq = irq;
		d->nmaps = nmaps;
		for (int m = 0; m < nmaps; m++) {
			char bpath[4096];
			unsigned long size;
			long boff;

			line = strtok_r(NULL, "\n", &save);
			if (!line || sscanf(line, "%lu %ld %4095[^\n]", &size, &boff, bpath) != 3)
				break;
			d->maps[m].size = size;
			d->maps[m].boff = boff;
			d->maps[m].bfd = real_open(bpath, O_RDWR | O_CLOEXEC);
		}
		idx = ndevs++;
	}
	if (idx < 0 || s >= MAXFD) {
		pthread_mutex_unlock(&lock);
		real_close(s);
		errno = ENFILE;
		return -1;
	}
	marks[s] = (unsigned char)(idx + 1);
	pthread_mutex_unlock(&lock);
	if (flags & O_NONBLOCK)
		fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
	return s;
}

static int open_common(int dirfd, const char *path, int flags, mode_t mode, int at)
{
	int fd;

	resolve();
	fd = at ? real_openat(dirfd, path, flags, mode) : real_open(path, flags, mode);
	if (fd < 0 && errno == ENXIO && (at == 0 || path[0] == '/' || dirfd == AT_FDCWD) && is_fake_node(path))
		return fake_open(path, flags);
	return fd;
}

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;

	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return open_common(AT_FDCWD, path, flags, mode, 0);
}
int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;

	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return open_common(dirfd, path, flags, mode, 1);
}
int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

ssize_t read(int fd, void *buf, size_t count)
{
	struct fdev *d;
	char m[16];
	int32_t latest = 0;
	int got = 0;
	ssize_t r;

	resolve();
	d = dev_of(fd);
	if (!d)
		return real_read(fd, buf, count);
	if (count != sizeof(int32_t)) {
		errno = EINVAL;
		return -1;
	}
	if (!d->irq) {
		errno = EIO;
		return -1;
	}
	for (;;) {
		r = recv(fd, m, sizeof(m), got ? MSG_DONTWAIT : (fcntl(fd, F_GETFL) & O_NONBLOCK ? MSG_DONTWAIT : 0));
		if (r == 5 && m[0] == 'E') {
			memcpy(&latest, m + 1, 4);
			got = 1;
			continue;
		}
		if (r == 0) {
			errno = EIO; /* the device was unregistered */
			return -1;
		}
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (got)
				break;
			errno = EAGAIN;
			return -1;
		}
		if (r < 0)
			return -1; /* EINTR: as uio_read's -ERESTARTSYS */
	}
	memcpy(buf, &latest, 4);
	return 4;
}

ssize_t write(int fd, const void *buf, size_t count)
{
	struct fdev *d;
	char m[8];
	int32_t ret;
	int c;

	resolve();
	d = dev_of(fd);
	if (!d)
		return real_write(fd, buf, count);
	if (count != sizeof(int32_t)) {
		errno = EINVAL;
		return -1;
	}
	if (!d->irq) {
		errno = EIO;
		return -1;
	}
	c = connect_node(d->path, 1);
	if (c < 0)
		return -1;
	m[0] = 'W';
	memcpy(m + 1, buf, 4);
	if (send(c, m, 5, 0) != 5 || recv(c, m, sizeof(m), 0) != 5 || m[0] != 'A') {
		real_close(c);
		errno = EIO;
		return -1;
	}
	real_close(c);
	memcpy(&ret, m + 1, 4);
	if (ret) {
		errno = -ret;
		return -1;
	}
	return 4;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct fdev *d;
	long page = sysconf(_SC_PAGESIZE);
	unsigned long mi, requested, actual;

	resolve();
	d = dev_of(fd);
	if (!d)
		return real_mmap(addr, len, prot, flags, fd, off);
	if (off < 0 || off % page) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	mi = (unsigned long)off / page; /* vm_pgoff */
	if (mi >= MAX_UIO_MAPS || mi >= (unsigned long)d->nmaps || d->maps[mi].size == 0) {
		errno = EINVAL; /* uio_find_mem_index() < 0 */
		return MAP_FAILED;
	}
	requested = (len + page - 1) / page;
	actual = (d->maps[mi].size + page - 1) / page;
	if (requested > actual || len > d->maps[mi].size) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	return real_mmap(addr, len, prot, flags, d->maps[mi].bfd, d->maps[mi].boff);
}
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) __attribute__((alias("mmap")));

int close(int fd)
{
	resolve();
	if (fd >= 0 && fd < MAXFD)
		marks[fd] = 0;
	return real_close(fd);
}
