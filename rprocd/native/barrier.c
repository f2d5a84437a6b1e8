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

#ifdef RPROCD_PYTHON
/* The same helpers as a CPython extension module (_rprocd_native): a call
 * costs tens of nanoseconds instead of a ctypes call's hundreds, which the
 * hot path (several copies and barriers per message) notices.  Addresses
 * are ints; data to copy into device memory is any contiguous buffer. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *py_wmb(PyObject *self, PyObject *unused)
{
	DMA_WMB();
	Py_RETURN_NONE;
}

static PyObject *py_rmb(PyObject *self, PyObject *unused)
{
	DMA_RMB();
	Py_RETURN_NONE;
}

static PyObject *py_mb(PyObject *self, PyObject *unused)
{
	MB();
	Py_RETURN_NONE;
}

static int addr_arg(PyObject *o, void **p)
{
	*p = PyLong_AsVoidPtr(o);
	return *p == NULL && PyErr_Occurred() ? -1 : 0;
}

/* copy_from_io(to_addr, from_addr, n) */
static PyObject *py_copy_from_io(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	void *to, *from;
	size_t n;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "copy_from_io(to_addr, from_addr, n)");
		return NULL;
	}
	if (addr_arg(args[0], &to) || addr_arg(args[1], &from))
		return NULL;
	n = PyLong_AsSize_t(args[2]);
	if (n == (size_t)-1 && PyErr_Occurred())
		return NULL;
	rprocd_copy_from_io(to, from, n);
	Py_RETURN_NONE;
}

/* from_io_bytes(from_addr, n) -> bytes */
static PyObject *py_from_io_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	void *from;
	Py_ssize_t n;
	PyObject *out;

	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "from_io_bytes(from_addr, n)");
		return NULL;
	}
	if (addr_arg(args[0], &from))
		return NULL;
	n = PyLong_AsSsize_t(args[1]);
	if (n < 0) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_ValueError, "negative length");
		return NULL;
	}
	out = PyBytes_FromStringAndSize(NULL, n);
	if (out)
		rprocd_copy_from_io(PyBytes_AS_STRING(out), from, (size_t)n);
	return out;
}

/* copy_to_io(to_addr, data, n): n bytes of the buffer data */
static PyObject *py_copy_to_io(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	void *to;
	size_t n;
	Py_buffer view;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "copy_to_io(to_addr, data, n)");
		return NULL;
	}
	if (addr_arg(args[0], &to))
		return NULL;
	n = PyLong_AsSize_t(args[2]);
	if (n == (size_t)-1 && PyErr_Occurred())
		return NULL;
	if (PyBytes_CheckExact(args[1])) {
		if ((size_t)PyBytes_GET_SIZE(args[1]) < n) {
			PyErr_SetString(PyExc_ValueError, "data shorter than n");
			return NULL;
		}
		rprocd_copy_to_io(to, PyBytes_AS_STRING(args[1]), n);
		Py_RETURN_NONE;
	}
	if (PyObject_GetBuffer(args[1], &view, PyBUF_C_CONTIGUOUS) < 0)
		return NULL;
	if ((size_t)view.len < n) {
		PyBuffer_Release(&view);
		PyErr_SetString(PyExc_ValueError, "data shorter than n");
		return NULL;
	}
	rprocd_copy_to_io(to, view.buf, n);
	PyBuffer_Release(&view);
	Py_RETURN_NONE;
}

/* set_io(to_addr, byte, n) */
static PyObject *py_set_io(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	void *to;
	long c;
	size_t n;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "set_io(to_addr, byte, n)");
		return NULL;
	}
	if (addr_arg(args[0], &to))
		return NULL;
	c = PyLong_AsLong(args[1]);
	if (c == -1 && PyErr_Occurred())
		return NULL;
	n = PyLong_AsSize_t(args[2]);
	if (n == (size_t)-1 && PyErr_Occurred())
		return NULL;
	rprocd_set_io(to, (int)c, n);
	Py_RETURN_NONE;
}

/* Span operations: (view, off, ...) where view is the span's memoryview of the
 * window.  Getting its buffer fails once the window is released (no access to
 * an unmapped window); off and n are checked against its length. */
static PyObject *access_error; /* rprocd.memory.MemoryAccessError, once set_error() named it */

static PyObject *py_set_error(PyObject *self, PyObject *cls)
{
	Py_XINCREF(cls);
	Py_XSETREF(access_error, cls);
	Py_RETURN_NONE;
}

static char *span_at(PyObject *view, Py_buffer *b, PyObject *off_o, PyObject *n_o, Py_ssize_t *n_out)
{
	Py_ssize_t off, n;

	if (PyObject_GetBuffer(view, b, PyBUF_WRITABLE) < 0)
		return NULL;
	off = PyLong_AsSsize_t(off_o);
	n = n_o ? PyLong_AsSsize_t(n_o) : 0;
	if ((off == -1 || n == -1) && PyErr_Occurred()) {
		PyBuffer_Release(b);
		return NULL;
	}
	if (off < 0 || n < 0 || off > b->len || n > b->len - off) {
		PyBuffer_Release(b);
		PyErr_Format(access_error ? access_error : PyExc_IndexError,
			     "range +%#zx+%#zx is outside the %#zx-byte span", off, n, b->len);
		return NULL;
	}
	*n_out = n;
	return (char *)b->buf + off;
}

/* span_read(view, off, n) -> bytes */
static PyObject *py_span_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer b;
	Py_ssize_t n;
	char *p;
	PyObject *out;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "span_read(view, off, n)");
		return NULL;
	}
	p = span_at(args[0], &b, args[1], args[2], &n);
	if (!p)
		return NULL;
	out = PyBytes_FromStringAndSize(NULL, n);
	if (out)
		rprocd_copy_from_io(PyBytes_AS_STRING(out), p, (size_t)n);
	PyBuffer_Release(&b);
	return out;
}

/* span_read_into(view, off, n, dst, at) */
static PyObject *py_span_read_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer b, d;
	Py_ssize_t n, at;
	char *p;

	if (nargs != 5) {
		PyErr_SetString(PyExc_TypeError, "span_read_into(view, off, n, dst, at)");
		return NULL;
	}
	p = span_at(args[0], &b, args[1], args[2], &n);
	if (!p)
		return NULL;
	if (PyObject_GetBuffer(args[3], &d, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
		PyBuffer_Release(&b);
		return NULL;
	}
	at = PyLong_AsSsize_t(args[4]);
	if (at < 0 || at > d.len || n > d.len - at) {
		PyBuffer_Release(&d);
		PyBuffer_Release(&b);
		if (!PyErr_Occurred())
			PyErr_Format(PyExc_ValueError, "%zd bytes do not fit at %zd in a %zd-byte buffer", n, at, d.len);
		return NULL;
	}
	rprocd_copy_from_io((char *)d.buf + at, p, (size_t)n);
	PyBuffer_Release(&d);
	PyBuffer_Release(&b);
	Py_RETURN_NONE;
}

/* span_write(view, off, data) */
static PyObject *py_span_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer b, d;
	Py_ssize_t n;
	char *p;
	const char *src;
	int own = 0;

	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "span_write(view, off, data)");
		return NULL;
	}
	if (PyBytes_CheckExact(args[2])) {
		src = PyBytes_AS_STRING(args[2]);
		n = PyBytes_GET_SIZE(args[2]);
	} else {
		if (PyObject_GetBuffer(args[2], &d, PyBUF_C_CONTIGUOUS) < 0)
			return NULL;
		src = d.buf;
		n = d.len;
		own = 1;
	}
	{
		PyObject *n_o = PyLong_FromSsize_t(n);
		p = n_o ? span_at(args[0], &b, args[1], n_o, &n) : NULL;
		Py_XDECREF(n_o);
	}
	if (p)
		rprocd_copy_to_io(p, src, (size_t)n);
	if (own)
		PyBuffer_Release(&d);
	if (!p)
		return NULL;
	PyBuffer_Release(&b);
	Py_RETURN_NONE;
}

/* span_fill(view, off, n, byte) */
static PyObject *py_span_fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer b;
	Py_ssize_t n;
	char *p;
	long c;

	if (nargs != 4) {
		PyErr_SetString(PyExc_TypeError, "span_fill(view, off, n, byte)");
		return NULL;
	}
	c = PyLong_AsLong(args[3]);
	if (c == -1 && PyErr_Occurred())
		return NULL;
	p = span_at(args[0], &b, args[1], args[2], &n);
	if (!p)
		return NULL;
	rprocd_set_io(p, (int)c, (size_t)n);
	PyBuffer_Release(&b);
	Py_RETURN_NONE;
}

static PyObject *py_abi(PyObject *self, PyObject *unused)
{
	return PyLong_FromLong(rprocd_barrier_abi());
}

static PyMethodDef methods[] = {
	{ "wmb", py_wmb, METH_NOARGS, "dma_wmb()" },
	{ "rmb", py_rmb, METH_NOARGS, "dma_rmb()" },
	{ "mb", py_mb, METH_NOARGS, "mb()" },
	{ "copy_from_io", (PyCFunction)(void (*)(void))py_copy_from_io, METH_FASTCALL, "memcpy_fromio" },
	{ "from_io_bytes", (PyCFunction)(void (*)(void))py_from_io_bytes, METH_FASTCALL, "memcpy_fromio into new bytes" },
	{ "copy_to_io", (PyCFunction)(void (*)(void))py_copy_to_io, METH_FASTCALL, "memcpy_toio" },
	{ "set_io", (PyCFunction)(void (*)(void))py_set_io, METH_FASTCALL, "memset_io" },
	{ "span_read", (PyCFunction)(void (*)(void))py_span_read, METH_FASTCALL, "memcpy_fromio of a span into new bytes" },
	{ "span_read_into", (PyCFunction)(void (*)(void))py_span_read_into, METH_FASTCALL, "memcpy_fromio of a span into a buffer" },
	{ "span_write", (PyCFunction)(void (*)(void))py_span_write, METH_FASTCALL, "memcpy_toio into a span" },
	{ "span_fill", (PyCFunction)(void (*)(void))py_span_fill, METH_FASTCALL, "memset_io of a span" },
	{ "set_error", py_set_error, METH_O, "the exception class for accesses outside a span" },
	{ "abi", py_abi, METH_NOARGS, "the helper's ABI version" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = { PyModuleDef_HEAD_INIT, "_rprocd_native", NULL, -1, methods };

PyMODINIT_FUNC PyInit__rprocd_native(void)
{
	return PyModule_Create(&module);
}
#endif
