/* test_integrity.c: checkpoints detect damage (issue 12, defect 7).
 * - Every single flipped bit of a small checkpoint, header and data alike,
 *   all of them in turn, makes loading it fail: bt_checkpoint_read, or the
 *   model or run built from it (a file of format 2 carries CRC-32s of both
 *   parts, and losing them is itself damage).
 * - The stored checksums are the CRC-32 anyone computes (zlib's crc32 over
 *   the data section; over length and header with the header's own digits
 *   as zeros), so another tool can check a file.
 * - A format-1 file (before checksums) still loads, marked unverified.
 * - A grad file (any safetensors file bptt writes) is checked the same way. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "checkpoint.h"
#include "lm.h"
#include "text_source.h"

static bt_registry *reg;
static char dir[64];
static char err[2048];

static void setup(void)
{
    reg = test_registry();
    test_tmpdir(dir, "integrity");
}

static void teardown(void)
{
    test_rmdir(dir);
    bt_registry_free(reg);
}

TestSuite(integrity, .init = setup, .fini = teardown);


static void spill(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* A checkpoint as small as a run makes: two characters, hidden 2, batch 1,
 * two epochs of adam (two optimizer states, a history). */
static const char *small_checkpoint(bt_corpus **corpus)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/small.st", dir);
    cr_assert_eq(bt_corpus_from_string("abab\nabba\n", 10, BT_TOKENS_CHARS, 0, corpus, err,
                                       sizeof err), BT_OK, "%s", err);
    bt_lm_config cfg;
    bt_lm_config_default(&cfg);
    cfg.hidden = 2, cfg.batch = 1, cfg.steps = 2, cfg.optimizer = "adam:lr=0.01";
    bt_source src;
    bt_lm *lm;
    cr_assert_eq(bt_text_source_new(*corpus, 1, 2, BT_BATCH_SEQUENTIAL, 0, &src, err, sizeof err),
                 BT_OK, "%s", err);
    cr_assert_eq(bt_lm_new(reg, &cfg, &src, &lm, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_lm_train(lm, 2, NULL, err, sizeof err), BT_OK, "%s", err);
    cr_assert_eq(bt_checkpoint_save(lm, path, "t.txt", err, sizeof err), BT_OK, "%s", err);
    bt_lm_free(lm);
    bt_source_free(&src);
    return path;
}

/* Does path load as a model and as a run on the corpus? */
static bool loads(const char *path, const bt_corpus *corpus)
{
    bt_checkpoint *ck = NULL;
    bt_model *m = NULL;
    bt_status st = bt_checkpoint_read(path, &ck, err, sizeof err);
    if (st == BT_OK)
        st = bt_checkpoint_model(ck, reg, &m, err, sizeof err);
    bt_model_free(m);
    if (st == BT_OK) {
        bt_source src = {0};
        bt_lm *lm = NULL;
        st = bt_text_source_new(corpus, ck->cfg.batch, ck->cfg.steps, ck->cfg.sampling, 0, &src,
                                err, sizeof err);
        bool have_src = st == BT_OK;
        if (st == BT_OK && (st = bt_lm_new(reg, &ck->cfg, &src, &lm, err, sizeof err)) == BT_OK)
            st = bt_checkpoint_restore(ck, lm, err, sizeof err);
        bt_lm_free(lm);
        if (have_src)
            bt_source_free(&src);
    }
    bt_checkpoint_free(ck);
    return st == BT_OK;
}

Test(integrity, every_flipped_bit_is_detected)
{
    bt_corpus *corpus;
    const char *path = small_checkpoint(&corpus);
    cr_assert(loads(path, corpus), "the intact file does not load: %s", err);
    size_t n;
    unsigned char *bytes = slurp(path, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | bytes[i];
    cr_assert_lt(n, 8192, "the small checkpoint is %zu bytes: too large to try every bit", n);
    char damaged[128];
    snprintf(damaged, sizeof damaged, "%s/damaged.st", dir);
    size_t silent = 0, silent_header = 0, first = 0;
    for (size_t bit = 0; bit < 8 * n; bit++) {
        bytes[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        spill(damaged, bytes, n);
        bytes[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        if (loads(damaged, corpus)) {
            if (!silent++)
                first = bit;
            silent_header += bit / 8 < 8 + hlen;
        }
    }
    free(bytes);
    bt_corpus_free(corpus);
    cr_assert_eq(silent, 0, "%zu of %zu flipped bits loaded silently (%zu in the header, the "
                 "first at byte %zu bit %zu)", silent, 8 * n, silent_header, first / 8, first % 8);
}

/* "crc32:xxxxxxxx" of metadata key in f, as a number. */
static unsigned long stored_crc(const bt_st_file *f, const char *key)
{
    const char *v = bt_st_meta(f, key);
    cr_assert_not_null(v, "no %s", key);
    cr_assert_eq(strncmp(v, "crc32:", 6), 0, "%s = %s", key, v);
    return strtoul(v + 6, NULL, 16);
}

Test(integrity, the_checksums_are_plain_crc32)
{
    bt_corpus *corpus;
    const char *path = small_checkpoint(&corpus);
    bt_corpus_free(corpus);
    bt_st_file *f;
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_OK, "%s", err);
    cr_assert(bt_st_checksummed(f));
    size_t n;
    unsigned char *b = slurp(path, &n);
    size_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | b[i];
    cr_assert_eq(crc32(0, b + 8 + hlen, (uInt)(n - 8 - hlen)), stored_crc(f, "checksum_data"));
    const char *key = "\"checksum_header\":\"crc32:";
    unsigned char *at = memmem(b, 8 + hlen, key, strlen(key));
    cr_assert_not_null(at);
    memcpy(at + strlen(key), "00000000", 8);
    cr_assert_eq(crc32(0, b, (uInt)(8 + hlen)), stored_crc(f, "checksum_header"));
    free(b);
    bt_st_free(f);
}

Test(integrity, losing_the_checksums_is_damage_but_format_1_loads_unverified)
{
    bt_corpus *corpus;
    const char *path = small_checkpoint(&corpus);
    bt_checkpoint *ck;
    cr_assert_eq(bt_checkpoint_read(path, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_assert(ck->verified);
    bt_checkpoint_free(ck);
    /* Rewritten by a tool that dropped them: raw bytes without the two entries. */
    size_t n;
    unsigned char *b = slurp(path, &n);
    size_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | b[i];
    for (int k = 0; k < 2; k++) {
        const char *key = k ? ",\"checksum_header\":\"crc32:" : ",\"checksum_data\":\"crc32:";
        unsigned char *at = memmem(b, 8 + hlen, key, strlen(key));
        cr_assert_not_null(at, "%s", key);
        size_t len = strlen(key) + 9; /* eight digits and the closing quote */
        memset(at, ' ', len);
        memmove(at, at + len, (size_t)(b + 8 + hlen - (at + len))); /* spaces move to the end */
        memset(b + 8 + hlen - len, ' ', len);
    }
    char stripped[128], v1[128];
    snprintf(stripped, sizeof stripped, "%s/stripped.st", dir);
    spill(stripped, b, n);
    cr_assert_eq(bt_checkpoint_read(stripped, &ck, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "lost its checksums"), "%s", err);
    /* The same file as format 1 (same length: "2" becomes "1") loads, unverified. */
    unsigned char *fmt = memmem(b, 8 + hlen, "bptt-lm-2", 9);
    cr_assert_not_null(fmt);
    fmt[8] = '1';
    snprintf(v1, sizeof v1, "%s/v1.st", dir);
    spill(v1, b, n);
    cr_assert_eq(bt_checkpoint_read(v1, &ck, err, sizeof err), BT_OK, "%s", err);
    cr_assert_not(ck->verified);
    bt_checkpoint_free(ck);
    cr_assert(loads(v1, corpus), "%s", err);
    free(b);
    bt_corpus_free(corpus);
}

Test(integrity, any_file_bptt_writes_is_checked)
{
    bt_st_file *f = bt_st_new();
    double x[4] = {1, 2, 3, 4};
    cr_assert_eq(bt_st_add(f, "x", BT_ST_F64, 1, (int64_t[]){4}, x, err, sizeof err), BT_OK);
    char path[128];
    snprintf(path, sizeof path, "%s/g.st", dir);
    cr_assert_eq(bt_st_write(f, path, err, sizeof err), BT_OK, "%s", err);
    bt_st_free(f);
    size_t n;
    unsigned char *b = slurp(path, &n);
    b[n - 3] ^= 0x10; /* in x[3] */
    spill(path, b, n);
    cr_assert_eq(bt_st_read(path, &f, err, sizeof err), BT_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "does not match its checksum"), "%s", err);
    free(b);
}
