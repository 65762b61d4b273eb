/* elf_check.h: is a file a whole shared object for this machine? Read before
 * dlopen, which maps the file and dies of SIGBUS on a page past its end (a
 * truncated copy), and which words a wrong architecture tersely. Internal to
 * the loader (framework/registry.c); not installed. */
#ifndef BPTT_ELF_CHECK_H
#define BPTT_ELF_CHECK_H

#include "bptt.h"

/* Checks the ELF header (magic, class, byte order, version, ET_DYN, machine,
 * program and section header sizes) and that every program header, section
 * and both header tables lie inside the file. BT_OK, or BT_ERR_PLUGIN /
 * BT_ERR_IO with "cannot load plugin PATH: <what is wrong>" in err. */
bt_status bt_elf_check(const char *path, char *err, size_t errlen);

#endif
