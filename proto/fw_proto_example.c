/* fw_proto_example.c - example messages generated from the schema.
 *
 * For every field type there is one way to make a valid value of it, within
 * the field's bound. The tests round-trip every message with these (so a new
 * row is covered the moment it is added), the fuzz seed generator writes
 * them out, the benchmark and docs use them. Values vary with the seed so
 * that integers of several encoded widths and strings of several lengths
 * appear, yet stay deterministic. */
#include "fw_proto_int.h"

#include "fw_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s_mix(uint64_t x) {
    /* splitmix64: a cheap, well-spread function of the seed. */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* An integer of a width chosen by the seed, so fixint, u8, u16, u32 and u64
 * encodings all occur across seeds. */
static uint64_t s_uint(uint64_t seed, uint64_t max) {
    static const int bits[] = {6, 8, 16, 32, 64};
    uint64_t x = s_mix(seed);
    int b = bits[x % 5];
    uint64_t v = b == 64 ? s_mix(x) : s_mix(x) & ((1ull << b) - 1);
    return max ? v % (max + 1) : v;
}

/* Copy s into buf truncated to max bytes (our strings are ASCII). */
static const char *s_fit(char *buf, size_t size, const char *s, uint64_t max) {
    snprintf(buf, size, "%s", s);
    if (max && strlen(buf) > max) buf[max] = '\0';
    return buf;
}

static fw_val_t *s_record(const fw_msg_info *ri, bool all, uint64_t seed);

/* A value for field f (a tree; scalars are wrapped in a one-value holder). */
static int s_value(fw_val_t *slot, const fw_field_info *f, bool all, uint64_t seed) {
    char buf[256], item[64];
    memset(slot, 0, sizeof *slot);
    switch (f->type) {
    case FW_T_BOOL:
        slot->kind = FW_VAL_BOOL;
        slot->as.b = (seed & 1) == 0;
        return 0;
    case FW_T_INT: {
        int64_t v = -(int64_t)(s_uint(seed, f->max ? f->max - 1 : (uint64_t)INT64_MAX - 1)) - 1;
        slot->kind = FW_VAL_INT;
        slot->as.i = v;
        return 0;
    }
    case FW_T_UINT:
        slot->kind = FW_VAL_UINT;
        slot->as.u = s_uint(seed, f->max);
        return 0;
    case FW_T_DOUBLE:
        slot->kind = FW_VAL_DOUBLE;
        slot->as.d = 0.25 + (double)(seed % 1000) / 8.0;
        return 0;
    case FW_T_STR:
        snprintf(item, sizeof item, "%s-%llu", f->name, (unsigned long long)(seed % 100000));
        s_fit(buf, sizeof buf, item, f->max);
        return fwp_val_set_str(slot, buf, strlen(buf));
    case FW_T_JSON:
        snprintf(buf, sizeof buf, "{\"example\":\"%s\",\"seed\":%llu,\"ok\":true}", f->name,
                 (unsigned long long)seed);
        return fwp_val_set_str(slot, buf, strlen(buf));
    case FW_T_BIN: {
        uint8_t bytes[48];
        size_t n = 8 + seed % 40;
        for (size_t i = 0; i < n; i++) bytes[i] = (uint8_t)s_mix(seed + i);
        return fwp_val_set_bin(slot, bytes, n);
    }
    case FW_T_STRLIST:
    case FW_T_UINTLIST:
    case FW_T_RECLIST: {
        fw_val_t *arr = fw_val_new_array();
        if (!arr) return FW_ENOMEM;
        uint64_t n = 1 + seed % 3;
        if (f->max && n > f->max) n = f->max;
        for (uint64_t i = 0; i < n; i++) {
            int rc = 0;
            if (f->type == FW_T_STRLIST) {
                snprintf(item, sizeof item, "%s-%llu", f->name, (unsigned long long)i);
                rc = fw_val_array_push_str(arr, item);
            } else if (f->type == FW_T_UINTLIST) {
                rc = fw_val_array_push_uint(arr, i);
            } else {
                fw_val_t *rec = s_record(fw_proto_rec_info(f->rec), all, seed + i);
                rc = rec ? fw_val_array_push(arr, &rec) : FW_ENOMEM;
            }
            if (rc < 0) {
                fw_val_destroy(&arr);
                return rc;
            }
        }
        *slot = *arr;
        free(arr);
        return 0;
    }
    case FW_T_STRMAP:
    case FW_T_MAP: {
        fw_val_t *map = fw_val_new_map();
        if (!map) return FW_ENOMEM;
        int rc = 0;
        if (f->type == FW_T_STRMAP) {
            rc |= fw_val_map_set_str(map, "FW_EXAMPLE", f->name);
            snprintf(item, sizeof item, "%llu", (unsigned long long)seed);
            rc |= fw_val_map_set_str(map, "FW_SEED", item);
        } else {
            /* One of each kind, and a nested container, to exercise the codec. */
            fw_val_t *inner = fw_val_new_array();
            rc |= fw_val_map_set_double(map, "loss", 2.5 - (double)(seed % 100) / 64.0);
            rc |= fw_val_map_set_uint(map, "tokens", s_uint(seed, 0));
            rc |= fw_val_map_set_int(map, "delta", -(int64_t)(seed % 1000) - 1);
            rc |= fw_val_map_set_str(map, "phase", "warmup");
            rc |= fw_val_map_set_bool(map, "ok", true);
            rc |= fw_val_map_set_bin(map, "raw", "\x00\x01\xff", 3);
            rc |= inner ? fw_val_array_push_nil(inner) : FW_ENOMEM;
            rc |= inner ? fw_val_array_push_str(inner, "a") : 0;
            rc |= inner ? fw_val_map_set(map, "list", &inner) : 0;
        }
        if (rc) {
            fw_val_destroy(&map);
            return FW_ENOMEM;
        }
        *slot = *map;
        free(map);
        return 0;
    }
    case FW_T_REC: {
        fw_val_t *rec = s_record(fw_proto_rec_info(f->rec), all, seed);
        if (!rec) return FW_ENOMEM;
        *slot = *rec;
        free(rec);
        return 0;
    }
    }
    return FW_EINVAL;
}

static fw_val_t *s_record(const fw_msg_info *ri, bool all, uint64_t seed) {
    fw_val_t *map = fw_val_new_map();
    if (!map || !ri) {
        fw_val_destroy(&map);
        return NULL;
    }
    for (int i = 0; i < ri->nfields; i++) {
        const fw_field_info *f = &ri->fields[i];
        if (!all && !f->required) continue;
        /* s_value fills a slot; a heap shell carries it into the map. */
        fw_val_t tmp;
        fw_val_t *child;
        if (s_value(&tmp, f, all, seed * 31 + (uint64_t)i) < 0 || !(child = fw_val_new_array())) {
            fwp_val_clear(&tmp);
            fw_val_destroy(&map);
            return NULL;
        }
        *child = tmp;
        if (fw_val_map_set(map, f->name, &child) < 0) {
            fw_val_destroy(&map);
            return NULL;
        }
    }
    return map;
}

fw_msg_t *fw_proto_example(int id, bool all, uint64_t seed) {
    fw_msg_t *m = fw_msg_new(id);
    if (!m) return NULL;
    m->request_id = s_uint(seed * 7 + 1, 0);
    m->epoch = seed % 2 ? s_uint(seed, 0) : 0;
    snprintf(m->sender, sizeof m->sender, "example-%llu", (unsigned long long)(seed % 1000));
    for (int i = 0; i < m->info->nfields; i++) {
        const fw_field_info *f = &m->info->fields[i];
        if (!all && !f->required) continue;
        if (s_value(&m->vals[i], f, all, seed * 131 + (uint64_t)i) < 0 ||
            fwp_check_value(m->info->name, f, &m->vals[i]) < 0) {
            fw_msg_destroy(&m);
            return NULL;
        }
    }
    return m;
}
