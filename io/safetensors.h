/* safetensors.h: read and write the safetensors format (checkpoints, fixtures).
 *
 * A bt_st_file is an in-memory set of named tensors plus string metadata. Writing
 * is atomic (temporary file, fsync, rename); reading validates the whole header
 * and layout and reports what is wrong with BT_ERR_FORMAT and a message.
 * Layout: u64 LE header length N, N bytes of JSON (space padded so 8 + N is a
 * multiple of 8), then the little-endian tensor bytes, contiguous, in file order.
 * Files bptt writes carry CRC-32 checksums of both parts in their metadata.
 */
#ifndef BPTT_SAFETENSORS_H
#define BPTT_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bptt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bt_st_dtype {
    BT_ST_F32,
    BT_ST_F64,
    BT_ST_I32,
    BT_ST_I64,
    BT_ST_U8,
    BT_ST_DTYPE_COUNT /* not a dtype: the number of them */
} bt_st_dtype;

#define BT_ST_MAX_DIMS 8

typedef struct bt_st_tensor {
    const char *name;
    bt_st_dtype dtype;
    int ndim;                        /* 0 is a scalar (count 1) */
    int64_t shape[BT_ST_MAX_DIMS];
    size_t count;                    /* elements: product of shape */
    void *data;                      /* [count] of dtype, owned by the file; never NULL */
} bt_st_tensor;

typedef struct bt_st_file bt_st_file;

/* NULL when out of memory. */
BT_API bt_st_file *bt_st_new(void);
BT_API void bt_st_free(bt_st_file *f);

/* Copies data (count * dtype size bytes). A duplicate name, a bad dtype, more
 * than BT_ST_MAX_DIMS dims, a negative dim or invalid UTF-8 in the name is
 * BT_ERR_ARG; the name "__metadata__" is reserved. data may be NULL only when
 * the tensor has no elements. */
BT_API bt_status bt_st_add(bt_st_file *f, const char *name, bt_st_dtype dt, int ndim,
                           const int64_t *shape, const void *data, char *err, size_t errlen);
/* Stores bt_real as F32 (float build) or F64 (double build). */
BT_API bt_status bt_st_add_real(bt_st_file *f, const char *name, int ndim, const int64_t *shape,
                                const bt_real *data, char *err, size_t errlen);

/* Sets or replaces a metadata entry; BT_ERR_ARG for NULL or invalid UTF-8. */
BT_API bt_status bt_st_set_meta(bt_st_file *f, const char *key, const char *value);
BT_API const char *bt_st_meta(const bt_st_file *f, const char *key); /* NULL if absent */

BT_API int bt_st_count(const bt_st_file *f);
BT_API const bt_st_tensor *bt_st_at(const bt_st_file *f, int i); /* insertion / file order */
BT_API const bt_st_tensor *bt_st_find(const bt_st_file *f, const char *name); /* NULL if absent */

/* Copies a tensor into bt_real, converting from any dtype; count must equal
 * t->count (BT_ERR_SHAPE otherwise). */
BT_API bt_status bt_st_get_real(const bt_st_tensor *t, bt_real *dst, size_t count,
                                char *err, size_t errlen);

/* Atomic: the old file at path is either kept whole or replaced whole. The
 * metadata gets two checksums, checksum_data and checksum_header, each
 * "crc32:" and eight hex digits (zlib's CRC-32): of the data section, and of
 * the length and header bytes with the header's own eight digits counted as
 * "00000000". Any checksum_* entries of f are replaced. */
BT_API bt_status bt_st_write(const bt_st_file *f, const char *path, char *err, size_t errlen);
/* *out is a new file on success, NULL on failure. A file with checksums is
 * verified (BT_ERR_FORMAT naming what does not match); one without them (not
 * written by bptt, or before checksums) is read as it is. */
BT_API bt_status bt_st_read(const char *path, bt_st_file **out, char *err, size_t errlen);
/* Did f come from a file whose checksums were present and matched? */
BT_API bool bt_st_checksummed(const bt_st_file *f);

/* The same two in memory (bt_st_read and bt_st_write run this very code; the
 * fuzz targets and tests use it directly). bt_st_read_buffer reads n bytes at
 * data, naming the input `name` in messages (NULL: "(buffer)"), and copies
 * what it keeps, verifying checksums as bt_st_read does. bt_st_write_buffer
 * puts the file's bytes, exactly as bt_st_write would write them (checksums
 * included), in *out (bt_malloc'd; release with bt_free)
 * and their count in *n. */
BT_API bt_status bt_st_read_buffer(const void *data, size_t n, const char *name, bt_st_file **out,
                                   char *err, size_t errlen);
BT_API bt_status bt_st_write_buffer(const bt_st_file *f, void **out, size_t *n, char *err,
                                    size_t errlen);

/* "F32", "F64", "I32", "I64", "U8"; "?" for a value outside the enum. */
BT_API const char *bt_st_dtype_name(bt_st_dtype dt);
BT_API size_t bt_st_dtype_size(bt_st_dtype dt); /* bytes per element, 0 if unknown */

#ifdef __cplusplus
}
#endif
#endif
