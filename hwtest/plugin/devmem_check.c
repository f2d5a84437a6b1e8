/* SPDX-License-Identifier: MIT */
/*
 * devmem_check: a QEMU TCG plugin that reports Device-memory misuse in one
 * guest-physical range (the bed's shared window).
 *
 * Why: on silicon, the window is mapped Device-nGnRnE (uio_mmap_physical ->
 * pgprot_noncached) and an access that is not naturally aligned, or a DC ZVA
 * there, raises an alignment fault (SIGBUS in user space).  QEMU's TCG
 * completes such accesses silently (shared/bed-facts.md), so the bed checks
 * them here instead:
 *
 *  - every load and store (qemu_plugin_register_vcpu_mem_cb) is translated to
 *    its guest-physical address (qemu_plugin_get_hwaddr +
 *    qemu_plugin_hwaddr_phys_addr); inside the window its address must be a
 *    multiple of its element size: the access size, except for load/store
 *    pair instructions, whose element is one register (LDP x, x at an 8-byte
 *    boundary is fine on Device memory, and TCG may report it as one 16-byte
 *    access);
 *  - DC ZVA does not reach the memory callbacks (TCG zeroes RAM in a helper
 *    with a host memset), so each DC ZVA gets an instruction callback that
 *    reads Xt (qemu_plugin_read_register, API v2+) and checks the zeroed
 *    block against the virtual pages seen mapping the window (learned from
 *    the memory callbacks, keyed by TTBR0_EL1 so one process's page does not
 *    stand for another's).
 *
 * Arguments: base=ADDR,size=N (the window; hex with 0x), log=FILE (default
 * stderr), mark=ADDR (optional: an aligned 4-byte store there is logged as
 * "MARK value", so the guest can delimit phases in the log in order with
 * the violations).  Each violation is one line "VIOLATION ..." (the first
 * 200 are printed), and at exit one line "devmem_check: accesses=N
 * violations=M dczva=K ...".
 *
 * A DC ZVA that takes a fault (e.g. the first write to a clean page) is
 * executed again: the instruction callback then runs twice for one DC ZVA,
 * so a DC ZVA at the same pc and block as the vCPU's previous one is counted
 * once.
 */
#include <glib.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t win_base, win_size, mark_pa = UINT64_MAX;
static FILE *out;
static GMutex lock;
static uint64_t n_access, n_violation, n_dczva, n_dczva_unknown, n_reported;

/* Per-vCPU register handles: Xn and TTBR0_EL1 (NULL when not exposed). */
#define MAX_VCPUS 8
static struct qemu_plugin_register *xreg[MAX_VCPUS][31];
static struct qemu_plugin_register *ttbr0[MAX_VCPUS];
static uint64_t last_zva_pc[MAX_VCPUS], last_zva_va[MAX_VCPUS];

/* Virtual pages seen mapping the window: (ttbr0, vpage) -> ppage. */
#define MAX_MAPS 128
static struct { uint64_t ttbr, vpage, ppage; } maps[MAX_MAPS];
static unsigned n_maps, next_map;

#define PAGE_MASK (~(uint64_t)0xfff)

static int in_window(uint64_t pa, uint64_t len)
{
    return pa < win_base + win_size && pa + len > win_base;
}

static uint64_t read_reg(struct qemu_plugin_register *h)
{
    GByteArray *buf;
    uint64_t v = 0;

    if (!h) {
        return 0;
    }
    buf = g_byte_array_new();
    if (qemu_plugin_read_register(h, buf) >= 8) {
        memcpy(&v, buf->data, 8); /* little-endian host and guest */
    }
    g_byte_array_free(buf, TRUE);
    return v;
}

static void report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void report(const char *fmt, ...)
{
    va_list ap;

    n_violation++;
    if (n_reported++ >= 200) {
        return;
    }
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fflush(out);
}

static void remember(uint64_t ttbr, uint64_t vaddr, uint64_t pa)
{
    uint64_t vpage = vaddr & PAGE_MASK, ppage = pa & PAGE_MASK;

    for (unsigned i = 0; i < n_maps; i++) {
        if (maps[i].ttbr == ttbr && maps[i].vpage == vpage) {
            maps[i].ppage = ppage;
            return;
        }
    }
    maps[next_map].ttbr = ttbr;
    maps[next_map].vpage = vpage;
    maps[next_map].ppage = ppage;
    next_map = (next_map + 1) % MAX_MAPS;
    if (n_maps < MAX_MAPS) {
        n_maps++;
    }
}

/* udata: the instruction's pc in the top bits is not needed; it carries the
 * element size for pair instructions (0 = use the access size). */
struct insn_info {
    uint64_t pc;
    unsigned pair_elem;
    uint32_t opcode;
};

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    struct insn_info *ii = udata;
    struct qemu_plugin_hwaddr *hw = qemu_plugin_get_hwaddr(info, vaddr);
    uint64_t pa, size, need;

    if (!hw || qemu_plugin_hwaddr_is_io(hw)) {
        return; /* the window is RAM to QEMU (a memory backend) */
    }
    pa = qemu_plugin_hwaddr_phys_addr(hw);
    size = 1u << qemu_plugin_mem_size_shift(info);
    if (!in_window(pa, size)) {
        return;
    }
    need = ii->pair_elem ? ii->pair_elem : size;
    g_mutex_lock(&lock);
    n_access++;
    remember(vcpu < MAX_VCPUS ? read_reg(ttbr0[vcpu]) : 0, vaddr, pa);
    if (pa == mark_pa && size == 4 && qemu_plugin_mem_is_store(info)) {
        uint32_t v = 0;
        GByteArray *b = g_byte_array_new();
        if (qemu_plugin_read_memory_vaddr(vaddr, b, 4) && b->len == 4) {
            memcpy(&v, b->data, 4);
        }
        g_byte_array_free(b, TRUE);
        fprintf(out, "MARK %u\n", v);
        fflush(out);
    }
    if (pa % need) {
        report("VIOLATION unaligned %s size=%" PRIu64 " pa=0x%" PRIx64 " va=0x%" PRIx64 " pc=0x%" PRIx64
               " insn=0x%08x\n",
               qemu_plugin_mem_is_store(info) ? "store" : "load", size, pa, vaddr, ii->pc, ii->opcode);
    }
    g_mutex_unlock(&lock);
}

static void on_dczva(unsigned int vcpu, void *udata)
{
    struct insn_info *ii = udata;
    unsigned rt = ii->opcode & 0x1f;
    uint64_t va, ttbr, block = 64; /* cortex-a57 / max: DCZID_EL0.BS = 4 */
    int known = 0;

    if (vcpu >= MAX_VCPUS || !xreg[vcpu][rt < 31 ? rt : 0]) {
        g_mutex_lock(&lock);
        n_dczva_unknown++;
        g_mutex_unlock(&lock);
        return;
    }
    va = rt == 31 ? 0 : read_reg(xreg[vcpu][rt]);
    va &= ~(block - 1);
    ttbr = read_reg(ttbr0[vcpu]);
    g_mutex_lock(&lock);
    if (last_zva_pc[vcpu] == ii->pc && last_zva_va[vcpu] == va) {
        g_mutex_unlock(&lock);
        return; /* the same DC ZVA again after a fault */
    }
    last_zva_pc[vcpu] = ii->pc;
    last_zva_va[vcpu] = va;
    n_dczva++;
    for (unsigned i = 0; i < n_maps; i++) {
        if (maps[i].ttbr == ttbr && maps[i].vpage == (va & PAGE_MASK)) {
            uint64_t pa = maps[i].ppage | (va & ~PAGE_MASK);
            known = 1;
            if (in_window(pa, block)) {
                report("VIOLATION dc-zva pa=0x%" PRIx64 " va=0x%" PRIx64 " pc=0x%" PRIx64 "\n", pa, va, ii->pc);
            }
        }
    }
    (void)known;
    g_mutex_unlock(&lock);
}

static unsigned pair_element(uint32_t insn)
{
    /* Load/store pair (all addressing forms, incl. non-temporal): op0 x0101 x0xx. */
    if ((insn & 0x3a000000) != 0x28000000) {
        return 0;
    }
    unsigned opc = insn >> 30, simd = (insn >> 26) & 1;
    if (simd) {
        return 4u << opc; /* S, D, Q */
    }
    return opc == 2 ? 8 : 4; /* X pair; W pair and LDPSW */
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);

    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        struct insn_info *ii = g_new0(struct insn_info, 1); /* lives as long as the TB may */
        uint32_t op = 0;

        qemu_plugin_insn_data(insn, &op, sizeof(op));
        ii->pc = qemu_plugin_insn_vaddr(insn);
        ii->opcode = op;
        ii->pair_elem = pair_element(op);
        if ((op & 0xffffffe0) == 0xd50b7420) { /* DC ZVA, Xt */
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_dczva, QEMU_PLUGIN_CB_R_REGS, ii);
        }
        qemu_plugin_register_vcpu_mem_cb(insn, on_mem, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_MEM_RW, ii);
    }
}

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
    GArray *regs = qemu_plugin_get_registers();

    if (vcpu >= MAX_VCPUS) {
        return;
    }
    for (guint i = 0; i < regs->len; i++) {
        qemu_plugin_reg_descriptor *d = &g_array_index(regs, qemu_plugin_reg_descriptor, i);
        unsigned n;
        char tail;

        if (sscanf(d->name, "x%u%c", &n, &tail) == 1 && n < 31) {
            xreg[vcpu][n] = d->handle;
        } else if (!g_ascii_strcasecmp(d->name, "TTBR0_EL1")) {
            ttbr0[vcpu] = d->handle;
        }
    }
    g_array_free(regs, TRUE);
    if (!xreg[vcpu][0]) {
        fprintf(out, "devmem_check: vcpu %u exposes no X registers: DC ZVA is not checked\n", vcpu);
    }
    if (!ttbr0[vcpu]) {
        fprintf(out, "devmem_check: vcpu %u exposes no TTBR0_EL1: DC ZVA pages are not per process\n", vcpu);
    }
    fflush(out);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *p)
{
    g_mutex_lock(&lock);
    fprintf(out,
            "devmem_check: accesses=%" PRIu64 " violations=%" PRIu64 " dczva=%" PRIu64 " dczva_unchecked=%" PRIu64
            " window=0x%" PRIx64 "+0x%" PRIx64 "\n",
            n_access, n_violation, n_dczva, n_dczva_unknown, win_base, win_size);
    fflush(out);
    g_mutex_unlock(&lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *log = NULL;

    out = stderr;
    if (!info->system_emulation || strcmp(info->target_name, "aarch64")) {
        fprintf(stderr, "devmem_check: needs qemu-system-aarch64\n");
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "devmem_check: bad argument %s\n", argv[i]);
            return -1;
        }
        *eq = 0;
        if (!strcmp(argv[i], "base")) {
            win_base = strtoull(eq + 1, NULL, 0);
        } else if (!strcmp(argv[i], "size")) {
            win_size = strtoull(eq + 1, NULL, 0);
        } else if (!strcmp(argv[i], "mark")) {
            mark_pa = strtoull(eq + 1, NULL, 0);
        } else if (!strcmp(argv[i], "log")) {
            log = eq + 1;
        } else {
            fprintf(stderr, "devmem_check: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (!win_size) {
        fprintf(stderr, "devmem_check: base= and size= are required\n");
        return -1;
    }
    if (log && !(out = fopen(log, "w"))) {
        perror(log);
        return -1;
    }
    g_mutex_init(&lock);
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
