/* elf_check.c: the loader's look at a plugin file before dlopen. dlopen maps
 * the file's segments, and touching a mapped page past the end of a truncated
 * file (an interrupted copy) kills the process with SIGBUS, so every extent
 * the file declares is checked against its size first, and a foreign or
 * damaged header gets a message that says what it is. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elf_check.h"

/* The host's own kind of object: what dlopen in this process can load. */
#if UINTPTR_MAX > 0xffffffffu
typedef Elf64_Ehdr elf_ehdr;
typedef Elf64_Phdr elf_phdr;
typedef Elf64_Shdr elf_shdr;
#define HOST_CLASS ELFCLASS64
#else
typedef Elf32_Ehdr elf_ehdr;
typedef Elf32_Phdr elf_phdr;
typedef Elf32_Shdr elf_shdr;
#define HOST_CLASS ELFCLASS32
#endif
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_DATA ELFDATA2MSB
#else
#define HOST_DATA ELFDATA2LSB
#endif
#if defined(__x86_64__)
#define HOST_MACHINE EM_X86_64
#elif defined(__i386__)
#define HOST_MACHINE EM_386
#elif defined(__aarch64__)
#define HOST_MACHINE EM_AARCH64
#elif defined(__arm__)
#define HOST_MACHINE EM_ARM
#elif defined(__riscv)
#define HOST_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define HOST_MACHINE EM_PPC64
#elif defined(__powerpc__)
#define HOST_MACHINE EM_PPC
#elif defined(__s390__)
#define HOST_MACHINE EM_S390
#elif defined(__mips__)
#define HOST_MACHINE EM_MIPS
#else
#define HOST_MACHINE EM_NONE /* unknown here: dlopen has the last word */
#endif

static const char *machine_name(unsigned m)
{
    switch (m) {
    case EM_X86_64: return "x86-64";
    case EM_386: return "32-bit x86";
    case EM_AARCH64: return "64-bit ARM (aarch64)";
    case EM_ARM: return "32-bit ARM";
    case EM_RISCV: return "RISC-V";
    case EM_PPC64: return "64-bit PowerPC";
    case EM_PPC: return "PowerPC";
    case EM_S390: return "s390";
    case EM_MIPS: return "MIPS";
    default: return "another machine";
    }
}

typedef struct elf_file {
    const char *path;
    int fd;
    uint64_t size;
    char *err;
    size_t errlen;
} elf_file;

static bt_status elf_fail(const elf_file *f, bt_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bt_status elf_fail(const elf_file *f, bt_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bt_errorf(f->err, f->errlen, "cannot load plugin %s: %s", f->path, msg);
    return st;
}

/* off + count * each, saturated: a lying header must not wrap around. */
static uint64_t elf_end(uint64_t off, uint64_t count, uint64_t each)
{
    if (each && count > (UINT64_MAX - off) / each)
        return UINT64_MAX;
    return off + count * each;
}

/* BT_OK when [.., end) lies in the file, else the truncation message. */
static bt_status elf_inside(const elf_file *f, uint64_t end, const char *what)
{
    if (end <= f->size)
        return BT_OK;
    return elf_fail(f, BT_ERR_PLUGIN, "truncated file: %s ends at byte %llu but the file has %llu "
                    "bytes (an interrupted copy?)", what, (unsigned long long)end,
                    (unsigned long long)f->size);
}

/* n bytes at off, which elf_inside has already placed in the file. */
static bt_status elf_read(const elf_file *f, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(f->fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return elf_fail(f, BT_ERR_IO, "cannot read it: %s",
                            k < 0 ? strerror(errno) : "the file shrank while it was read");
        got += (size_t)k;
    }
    return BT_OK;
}

/* The identification bytes and the header fields dlopen relies on. */
static bt_status elf_check_header(const elf_file *f, const elf_ehdr *h)
{
    const unsigned char *id = h->e_ident;
    const char *bits = HOST_CLASS == ELFCLASS64 ? "64-bit" : "32-bit";
    if (id[EI_CLASS] != HOST_CLASS)
        return elf_fail(f, BT_ERR_PLUGIN, "it is a %s ELF object and this bptt is %s: build the "
                        "plugin for this machine", id[EI_CLASS] == ELFCLASS32 ? "32-bit"
                        : id[EI_CLASS] == ELFCLASS64 ? "64-bit" : "damaged (unknown class)", bits);
    if (id[EI_DATA] != HOST_DATA)
        return elf_fail(f, BT_ERR_PLUGIN, "its byte order is %s and this machine's is %s: build "
                        "the plugin for this machine", id[EI_DATA] == ELFDATA2MSB ? "big-endian"
                        : id[EI_DATA] == ELFDATA2LSB ? "little-endian" : "unknown (damaged file)",
                        HOST_DATA == ELFDATA2LSB ? "little-endian" : "big-endian");
    if (id[EI_VERSION] != EV_CURRENT || h->e_version != EV_CURRENT)
        return elf_fail(f, BT_ERR_PLUGIN, "unknown ELF version %u (damaged file?)", id[EI_VERSION]);
    if (h->e_type != ET_DYN)
        return elf_fail(f, BT_ERR_PLUGIN, "it is %s, not a shared object: build the plugin with "
                        "'cc -shared -fPIC'", h->e_type == ET_REL ? "an object file (.o)"
                        : h->e_type == ET_EXEC ? "an executable" : h->e_type == ET_CORE
                        ? "a core dump" : "an ELF file of an unknown type");
    if (HOST_MACHINE != EM_NONE && h->e_machine != HOST_MACHINE)
        return elf_fail(f, BT_ERR_PLUGIN, "it was built for %s (ELF machine %u) and this bptt "
                        "runs on %s: build the plugin for this machine",
                        machine_name(h->e_machine), h->e_machine, machine_name(HOST_MACHINE));
    if (h->e_ehsize != sizeof(elf_ehdr) || h->e_phentsize != sizeof(elf_phdr) ||
        h->e_phoff < sizeof(elf_ehdr) || h->e_phnum == 0 || h->e_phnum == PN_XNUM ||
        (h->e_shoff && h->e_shentsize != sizeof(elf_shdr)))
        return elf_fail(f, BT_ERR_PLUGIN, "damaged ELF header (header size %u, %u program "
                        "headers of %u bytes at byte %llu, section headers of %u bytes)",
                        h->e_ehsize, h->e_phnum, h->e_phentsize,
                        (unsigned long long)h->e_phoff, h->e_shentsize);
    return BT_OK;
}

/* The program header table and every segment's bytes in the file. */
static bt_status elf_check_segments(const elf_file *f, const elf_ehdr *h)
{
    bt_status st = elf_inside(f, elf_end(h->e_phoff, h->e_phnum, sizeof(elf_phdr)),
                              "the program header table");
    for (unsigned i = 0; st == BT_OK && i < h->e_phnum; i++) {
        elf_phdr p;
        st = elf_read(f, &p, sizeof p, h->e_phoff + (uint64_t)i * sizeof p);
        char what[32];
        snprintf(what, sizeof what, "segment %u", i);
        if (st == BT_OK)
            st = elf_inside(f, elf_end(p.p_offset, 1, p.p_filesz), what);
    }
    return st;
}

/* The section header table and every section that has bytes in the file.
 * dlopen does not read them, but they sit at the end of the file, so they
 * are what a copy cut short loses first. */
static bt_status elf_check_sections(const elf_file *f, const elf_ehdr *h)
{
    if (h->e_shoff == 0)
        return BT_OK; /* no section headers: allowed */
    uint64_t n = h->e_shnum;
    bt_status st = elf_inside(f, elf_end(h->e_shoff, n ? n : 1, sizeof(elf_shdr)),
                              "the section header table");
    if (st == BT_OK && n == 0) { /* more than 0xff00 sections: the count is in section 0 */
        elf_shdr s0;
        st = elf_read(f, &s0, sizeof s0, h->e_shoff);
        n = s0.sh_size;
        if (st == BT_OK)
            st = elf_inside(f, elf_end(h->e_shoff, n, sizeof(elf_shdr)),
                            "the section header table");
    }
    for (uint64_t i = 0; st == BT_OK && i < n; i++) {
        elf_shdr s;
        st = elf_read(f, &s, sizeof s, h->e_shoff + i * sizeof s);
        char what[40];
        snprintf(what, sizeof what, "section %llu", (unsigned long long)i);
        if (st == BT_OK && s.sh_type != SHT_NOBITS)
            st = elf_inside(f, elf_end(s.sh_offset, 1, s.sh_size), what);
    }
    return st;
}

static bt_status elf_check_open(elf_file *f)
{
    elf_ehdr h;
    memset(&h, 0, sizeof h);
    size_t have = f->size < sizeof h ? (size_t)f->size : sizeof h;
    bt_status st = elf_read(f, &h, have, 0);
    if (st != BT_OK)
        return st;
    if (f->size == 0)
        return elf_fail(f, BT_ERR_PLUGIN, "the file is empty (an interrupted copy?)");
    if (memcmp(h.e_ident, ELFMAG, have < SELFMAG ? have : SELFMAG) != 0)
        return elf_fail(f, BT_ERR_PLUGIN, "it is not a shared object (no ELF header; a plugin "
                        "is built with 'cc -shared -fPIC')");
    if (have >= EI_NIDENT && (h.e_ident[EI_CLASS] != HOST_CLASS || h.e_ident[EI_DATA] != HOST_DATA))
        return elf_check_header(f, &h); /* a foreign object: say so, even if it is cut short */
    if ((st = elf_inside(f, sizeof h, "the ELF header")) != BT_OK)
        return st;
    if ((st = elf_check_header(f, &h)) != BT_OK || (st = elf_check_segments(f, &h)) != BT_OK)
        return st;
    return elf_check_sections(f, &h);
}

bt_status bt_elf_check(const char *path, char *err, size_t errlen)
{
    elf_file f = {.path = path, .err = err, .errlen = errlen};
    f.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f.fd < 0)
        return elf_fail(&f, BT_ERR_IO, "cannot open it: %s", strerror(errno));
    struct stat sb;
    bt_status st;
    if (fstat(f.fd, &sb) != 0)
        st = elf_fail(&f, BT_ERR_IO, "cannot read it: %s", strerror(errno));
    else {
        f.size = (uint64_t)sb.st_size;
        st = elf_check_open(&f);
    }
    close(f.fd);
    return st;
}
