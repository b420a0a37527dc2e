/* agent_epoch.c - highest epoch seen, persisted in work_dir/epoch.
 *
 * File format: one line "flywheel-epoch 1 <decimal>\n" (magic, format
 * version, value), written with fw_file_write_atomic so a crash leaves the
 * old or the new value, never a torn one. Epochs only grow; the file is
 * written once per leader change, never per message. */
#include "agent_epoch.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAGIC "flywheel-epoch"
#define S_VERSION 1

struct agent_epoch_t {
    char *path;
    uint64_t highest;
    int last_error;
};

agent_epoch_t *agent_epoch_open(const char *path) {
    agent_epoch_t *e = calloc(1, sizeof *e);
    if (!e || !(e->path = strdup(path))) {
        free(e);
        fw_err_set(FW_ENOMEM, "epoch: out of memory");
        return NULL;
    }
    char *text = NULL;
    int rc = fw_file_read(path, 256, &text, NULL);
    if (rc == FW_ENOTFOUND) return e;
    if (rc < 0) goto fail;
    char magic[32];
    int version = 0;
    char value[32];
    char extra;
    if (sscanf(text, "%31s %d %31s %c", magic, &version, value, &extra) != 3 ||
        strcmp(magic, S_MAGIC) != 0) {
        rc = fw_err_set(FW_ECORRUPT, "epoch file %s: expected \"%s %d <epoch>\"", path, S_MAGIC,
                        S_VERSION);
        goto fail;
    }
    if (version != S_VERSION) {
        rc = fw_err_set(FW_EVERSION, "epoch file %s: format version %d, this agent reads %d",
                        path, version, S_VERSION);
        goto fail;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (errno || *end || value[0] == '-') {
        rc = fw_err_set(FW_ECORRUPT, "epoch file %s: bad value \"%s\"", path, value);
        goto fail;
    }
    e->highest = v;
    free(text);
    return e;
fail:
    (void)rc;
    free(text);
    free(e->path);
    free(e);
    return NULL;
}

void agent_epoch_destroy(agent_epoch_t **p) {
    if (!p || !*p) return;
    free((*p)->path);
    free(*p);
    *p = NULL;
}

agent_epoch_verdict agent_epoch_check(agent_epoch_t *e, uint64_t epoch) {
    if (epoch < e->highest) return AGENT_EPOCH_STALE;
    if (epoch == e->highest) return AGENT_EPOCH_SAME;
    char line[64];
    int len = snprintf(line, sizeof line, "%s %d %" PRIu64 "\n", S_MAGIC, S_VERSION, epoch);
    e->last_error = fw_file_write_atomic(e->path, line, (size_t)len, 0644);
    if (e->last_error < 0)
        fw_error("event=epoch-persist-failed epoch=%" PRIu64 " err=%s detail=\"%s\"", epoch,
                 fw_errname(e->last_error), fw_err_detail());
    e->highest = epoch;
    return AGENT_EPOCH_NEW;
}

uint64_t agent_epoch_get(const agent_epoch_t *e) { return e->highest; }

int agent_epoch_last_error(const agent_epoch_t *e) { return e->last_error; }
