/* SPDX-License-Identifier: MIT */
/*
 * The bed's negative control: Device-memory misuse on the UIO map of the
 * shared window, which the devmem_check plugin must report.
 *
 * Usage: negctl MODE [UIO_NAME]   (UIO_NAME default rpmsg_shm)
 *   aligned    aligned 8-, 4- and 2-byte loads and an 8-aligned LDP: no violation
 *   unaligned  one 8-byte load at window offset 1: one violation
 *   dczva      one DC ZVA of the 64-byte block at window offset 0: one violation
 *   mark N     one aligned 32-bit store of N at window offset 0x3b0: the
 *              plugin logs "MARK N" (phases of the run, in order with the
 *              violations)
 * Offsets 0..0x3b7 of the window are before the resource table and unused by
 * the layout, so the control never disturbs a session.
 *
 * Each access is one inline-asm instruction, so that the compiler cannot split,
 * merge or align it.  On these QEMU builds none of them faults (shared/
 * bed-facts.md); on silicon the last two raise SIGBUS (BUS_ADRALN).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int open_uio(const char *want, char *dev, size_t devlen)
{
	DIR *d = opendir("/sys/class/uio");
	struct dirent *e;
	char path[512], name[64];

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/uio/%s/name", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		if (fgets(name, sizeof(name), f)) {
			name[strcspn(name, "\n")] = 0;
			if (!strcmp(name, want)) {
				fclose(f);
				closedir(d);
				snprintf(dev, devlen, "/dev/%s", e->d_name);
				return open(dev, O_RDWR | O_SYNC);
			}
		}
		fclose(f);
	}
	closedir(d);
	return -1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	char dev[300];
	int fd = open_uio(argc > 2 && strcmp(mode, "mark") ? argv[2] : "rpmsg_shm", dev, sizeof(dev));
	volatile uint8_t *p;
	uint64_t v = 0, w = 0;

	if (fd < 0) {
		perror("negctl: no UIO device");
		return 2;
	}
	p = mmap(NULL, 0x8000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("negctl: mmap");
		return 2;
	}
	/* An aligned load first: the plugin learns this page maps the window. */
	__asm__ volatile("ldr %0, [%1]" : "=r"(v) : "r"(p) : "memory");
	if (!strcmp(mode, "aligned")) {
		uint32_t x;
		uint16_t h;
		__asm__ volatile("ldr %w0, [%1]" : "=r"(x) : "r"(p + 4) : "memory");
		__asm__ volatile("ldrh %w0, [%1]" : "=r"(h) : "r"(p + 2) : "memory");
		__asm__ volatile("ldp %0, %1, [%2]" : "=r"(v), "=r"(w) : "r"(p + 8) : "memory");
		v += x + h;
	} else if (!strcmp(mode, "unaligned")) {
		__asm__ volatile("ldr %0, [%1]" : "=r"(v) : "r"(p + 1) : "memory");
	} else if (!strcmp(mode, "mark") && argc > 2) {
		uint32_t n = (uint32_t)strtoul(argv[2], NULL, 0);
		__asm__ volatile("str %w0, [%1]" : : "r"(n), "r"(p + 0x3b0) : "memory");
	} else if (!strcmp(mode, "dczva")) {
		__asm__ volatile("dc zva, %0" : : "r"(p) : "memory");
	} else {
		fprintf(stderr, "usage: negctl aligned|unaligned|dczva [UIO_NAME]\n");
		return 2;
	}
	printf("negctl %s on %s: survived (value %#llx)\n", mode, dev, (unsigned long long)(v + w));
	return 0;
}
