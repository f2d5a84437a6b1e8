/* rprocd native helper: the memory barriers pure Python cannot issue.
 *
 * The host writes a ring (descriptors, then avail->idx) in shared memory and
 * then writes the mailbox register that interrupts the remote core.  On arm64
 * both are Device memory through UIO, but different peripherals: nothing in
 * the architecture orders the two stores unless a barrier sits between them.
 * Linux puts one there (virtio_wmb() then writel(), whose __iowmb() is
 * "dmb oshst"); this is the same barrier, callable through ctypes.
 */
void rprocd_wmb(void)
{
#if defined(__aarch64__)
	__asm__ __volatile__("dmb oshst" ::: "memory");
#elif defined(__arm__)
	__asm__ __volatile__("dmb oshst" ::: "memory");
#elif defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("sfence" ::: "memory");
#else
	__sync_synchronize();
#endif
}

void rprocd_mb(void)
{
#if defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("dmb osh" ::: "memory");
#elif defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("mfence" ::: "memory");
#else
	__sync_synchronize();
#endif
}

int rprocd_barrier_abi(void)
{
	return 1;
}
