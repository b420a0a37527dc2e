/* ctl_cluster.c - `flywheelctl cluster status`.
 *
 * The table form is a few "Name: value" lines read from the CLUSTER_STATUS
 * doc (see docs/cli.md for the fields it looks for); fields it does not know
 * are listed after them, so nothing the coordinator reports is hidden. */
#include "ctl.h"

#include <czmq.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Keys the summary lines below already show. */
static const char *const s_shown[] = {"schema", "leader", "epoch", "leader_endpoint",
                                      "coordinators", "agents", "queue", "queue_depth",
                                      "tasks", "task_counts", "jobs", NULL};

static bool s_is_shown(const char *key) {
    for (int i = 0; s_shown[i]; i++)
        if (strcmp(s_shown[i], key) == 0) return true;
    return false;
}

/* "PENDING 3  RUNNING 5" from an object of counts. */
static void s_counts(const json_t *obj, char *buf, size_t size) {
    buf[0] = '\0';
    const char *key;
    json_t *v;
    size_t used = 0;
    json_object_foreach((json_t *)obj, key, v) {
        char cell[64];
        used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%s%s %s",
                                 used ? "  " : "", key, ctl_cell(v, cell, sizeof cell));
        if (used >= size) break;
    }
    if (!buf[0]) snprintf(buf, size, "-");
}

static void s_print_status(const json_t *doc) {
    char cell[256], line[1024];
    json_t *leader = ctl_get(doc, "leader");
    const char *lname = json_is_string(leader) ? json_string_value(leader)
                                               : ctl_str(doc, "leader.name");
    json_t *epoch = ctl_get_any(doc, "leader.epoch", "epoch", NULL);
    const char *lend = json_is_object(leader) ? ctl_str(doc, "leader.client")
                                              : ctl_str(doc, "leader_endpoint");
    if (!*lname) printf("Leader:        (none)\n");
    else
        printf("Leader:        %s (epoch %s%s%s)\n", lname, ctl_cell(epoch, cell, sizeof cell),
               *lend ? ", " : "", lend);

    json_t *coords = ctl_get(doc, "coordinators");
    if (json_is_array(coords)) {
        size_t i, used = 0;
        json_t *c;
        line[0] = '\0';
        json_array_foreach(coords, i, c) {
            const char *name = json_is_string(c) ? json_string_value(c) : ctl_str(c, "name");
            bool is_leader = *lname && strcmp(name, lname) == 0;
            used += (size_t)snprintf(line + used, used < sizeof line ? sizeof line - used : 0,
                                     "%s%s%s", i ? ", " : "", name, is_leader ? " (leader)" : "");
            if (used >= sizeof line) break;
        }
        printf("Coordinators:  %s\n", line[0] ? line : "-");
    }

    json_t *agents = ctl_get(doc, "agents");
    if (json_is_object(agents)) {
        s_counts(agents, line, sizeof line);
        printf("Agents:        %s\n", line);
    } else if (json_is_array(agents)) {
        printf("Agents:        %zu\n", json_array_size(agents));
    } else if (agents) {
        printf("Agents:        %s\n", ctl_cell(agents, cell, sizeof cell));
    }

    json_t *queue = ctl_get_any(doc, "queue_depth", "queue.depth", "queue", NULL);
    if (queue && !json_is_object(queue))
        printf("Queue:         %s job(s) waiting\n", ctl_cell(queue, cell, sizeof cell));
    else if (json_is_object(queue)) {
        s_counts(queue, line, sizeof line);
        printf("Queue:         %s\n", line);
    }

    json_t *jobs = ctl_get(doc, "jobs");
    if (json_is_object(jobs)) {
        s_counts(jobs, line, sizeof line);
        printf("Jobs:          %s\n", line);
    }
    json_t *tasks = ctl_get_any(doc, "tasks", "task_counts", NULL);
    if (json_is_object(tasks)) {
        s_counts(tasks, line, sizeof line);
        printf("Tasks:         %s\n", line);
    }

    const char *key;
    json_t *v;
    json_object_foreach((json_t *)doc, key, v) {
        if (s_is_shown(key)) continue;
        char label[40];
        snprintf(label, sizeof label, "%s:", key);
        if (json_is_object(v)) {
            s_counts(v, line, sizeof line);
            printf("%-14s %s\n", label, line);
        } else {
            printf("%-14s %s\n", label, ctl_cell(v, line, sizeof line));
        }
    }
}

static int s_status(ctl_t *c) {
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    fw_msg_t *req = ctl_request(c, FW_MSG_CLUSTER_STATUS);
    if (!req) return CTL_EXIT_ERROR;
    json_t *doc = ctl_call_doc(c, &req, NULL);
    if (!doc) return CTL_EXIT_ERROR;
    if (c->output == CTL_OUT_JSON) ctl_print_json(doc);
    else if (json_is_object(doc)) s_print_status(doc);
    else ctl_print_json(doc);
    json_decref(doc);
    return CTL_EXIT_OK;
}

/* A CURVE key pair for the coordinators, in czmq's zcert format: PATH holds the public
 * half (for agents, flywheelctl --curve-server-key and the Python client) and PATH_secret
 * both halves (coordinator curve.secret_key_file; zcert_load(PATH) finds it). Made here
 * because operators have flywheelctl at hand and czmq writes the exact format the
 * daemons read. An existing certificate is never overwritten: it may be in use. */
static int s_gen_cert(ctl_t *c) {
    const char *path = c->argv[0];
    char secret[4096];
    if (snprintf(secret, sizeof secret, "%s_secret", path) >= (int)sizeof secret)
        return ctl_errorf(c, "gen-cert: path too long: %s", path);
    if (access(path, F_OK) == 0 || access(secret, F_OK) == 0)
        return ctl_errorf(c, "gen-cert: %s or %s exists; not overwriting a certificate", path,
                          secret);
    zcert_t *cert = zcert_new();
    if (!cert) return ctl_errorf(c, "gen-cert: cannot generate a key pair");
    zcert_set_meta(cert, "name", "%s", "flywheel-coordinator");
    int rc = zcert_save(cert, path); /* the secret file is written mode 0600 */
    if (rc < 0) {
        zcert_destroy(&cert);
        return ctl_errorf(c, "gen-cert: cannot write %s: %s", path, strerror(errno));
    }
    if (c->output == CTL_OUT_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "public_key_file", path, "secret_key_file",
                              secret, "public_key", zcert_public_txt(cert));
        ctl_print_json(o);
        json_decref(o);
    } else {
        printf("public key:  %s\npublic file: %s\nsecret file: %s\n", zcert_public_txt(cert),
               path, secret);
    }
    zcert_destroy(&cert);
    return CTL_EXIT_OK;
}

const ctl_cmd_def ctl_cluster_cmds[] = {
    {"cluster", "status", NULL, 0, 0,
     "Leader name and epoch, coordinators, agents, queue depth, task counts by state.",
     "Asks any coordinator (standbys redirect to the leader). The leader is named as in the\n"
     "local cluster's pid files (coord-1, ...). -o json prints the coordinator's status doc.",
     NULL, s_status},
    {"cluster", "gen-cert", "PATH", 1, 1,
     "Make a CURVE certificate for the coordinators (czmq zcert): PATH and PATH_secret.",
     "Coordinators: curve.enabled: true, curve.secret_key_file: PATH (the secret half is\n"
     "read from PATH_secret). Agents: curve.server_public_key_file: PATH. Clients:\n"
     "--curve-server-key PATH (or FLYWHEEL_CURVE_SERVER_KEY). Never overwrites a file.\n"
     "Needs no coordinator.",
     NULL, s_gen_cert},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
