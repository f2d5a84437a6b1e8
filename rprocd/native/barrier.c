/* rprocd native helper: what pure Python cannot do for Device memory.
 *
 * 1. Barriers.  Rings that remoteproc creates use weak_barriers = false
 *    (rp_find_vq), so Linux's virtio_wmb()/virtio_rmb() are dma_wmb()/dma_rmb()
 *    and virtio_mb() is mb() (include/linux/virtio_ring.h).  On arm64
 *    (arch/arm64/include/asm/barrier.h): __dma_wmb() = "dmb oshst",
 *    __dma_rmb() = "dmb oshld", __mb() = "dsb sy".  On x86-64
 *    (arch/x86/include/asm/barrier.h) dma_wmb() and dma_rmb() are barrier(),
 *    a compiler barrier only: x86 is TSO, stores are not reordered with
 *    other stores nor loads with other loads, so only the compiler could
 *    reorder them; mb() is a real fence (store->load order is not TSO's).
 *
 * 2. Device copies, the user-space memcpy_fromio/memcpy_toio/memset_io of
 *    arch/arm64/kernel/io.c (__memcpy_fromio, __memcpy_toio, __memset_io):
 *    single bytes until the device side is 8-byte aligned, then aligned
 *    64-bit words, then single bytes.  Every device access is volatile (one
 *    load or store of its own width, never merged, split or widened) and
 *    naturally aligned; no libc routine is called (the build also passes
 *    -fno-builtin and -fno-tree-loop-distribute-patterns so that gcc cannot
 *    turn a loop back into memcpy/memset).  The normal-memory side may be
 *    unaligned: it is accessed with __builtin_memcpy of a constant 8, which
 *    compiles to one (unaligned-capable) load or store on normal memory.
 *
 * Everything is called through ctypes; rprocd/memory.py has a pure-Python
 * twin that makes the same device accesses.
 */
#include <stddef.h>
#include <stdint.h>

#if defined(__aarch64__)
#define DMA_WMB() __asm__ __volatile__("dmb oshst" ::: "memory")
#define DMA_RMB() __asm__ __volatile__("dmb oshld" ::: "memory")
#define MB() __asm__ __volatile__("dsb sy" ::: "memory")
#elif defined(__arm__)
#define DMA_WMB() __asm__ __volatile__("dmb oshst" ::: "memory")
#define DMA_RMB() __asm__ __volatile__("dmb osh" ::: "memory")
#define MB() __asm__ __volatile__("dsb sy" ::: "memory")
#elif defined(__x86_64__) || defined(__i386__)
#define DMA_WMB() __asm__ __volatile__("" ::: "memory")
#define DMA_RMB() __asm__ __volatile__("" ::: "memory")
#define MB() __asm__ __volatile__("mfence" ::: "memory")
#else
#define DMA_WMB() __sync_synchronize()
#define DMA_RMB() __sync_synchronize()
#define MB() __sync_synchronize()
#endif

void rprocd_wmb(void) { DMA_WMB(); }
void rprocd_rmb(void) { DMA_RMB(); }
void rprocd_mb(void) { MB(); }

typedef volatile uint8_t vu8;
typedef volatile uint64_t vu64;

/* memcpy_fromio: src is device memory. */
void rprocd_copy_from_io(void *to, const void *from, size_t count)
{
	uint8_t *d = to;
	const uint8_t *s = from;

	while (count && ((uintptr_t)s & 7)) {
		*d++ = *(const vu8 *)s++;
		count--;
	}
	while (count >= 8) {
		uint64_t v = *(const vu64 *)s;
		__builtin_memcpy(d, &v, 8);
		s += 8;
		d += 8;
		count -= 8;
	}
	while (count) {
		*d++ = *(const vu8 *)s++;
		count--;
	}
}

/* memcpy_toio: dst is device memory. */
void rprocd_copy_to_io(void *to, const void *from, size_t count)
{
	uint8_t *d = to;
	const uint8_t *s = from;

	while (count && ((uintptr_t)d & 7)) {
		*(vu8 *)d++ = *s++;
		count--;
	}
	while (count >= 8) {
		uint64_t v;
		__builtin_memcpy(&v, s, 8);
		*(vu64 *)d = v;
		s += 8;
		d += 8;
		count -= 8;
	}
	while (count) {
		*(vu8 *)d++ = *s++;
		count--;
	}
}

/* memset_io: dst is device memory. */
void rprocd_set_io(void *to, int c, size_t count)
{
	uint8_t *d = to;
	uint64_t q = (uint8_t)c;

	q |= q << 8;
	q |= q << 16;
	q |= q << 32;
	while (count && ((uintptr_t)d & 7)) {
		*(vu8 *)d++ = (uint8_t)c;
		count--;
	}
	while (count >= 8) {
		*(vu64 *)d = q;
		d += 8;
		count -= 8;
	}
	while (count) {
		*(vu8 *)d++ = (uint8_t)c;
		count--;
	}
}

int rprocd_barrier_abi(void)
{
	return 2;
}
