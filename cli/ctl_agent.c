/* ctl_agent.c - `flywheelctl agent list|show|drain|undrain`.
 *
 * There is no single-agent request in the protocol: `agent show` lists the
 * agents and picks one, which is cheap (agents number in the hundreds). */
#include "ctl.h"

#include "fw_err.h"

#include <stdlib.h>
#include <string.h>

static const char *s_agent_id(const json_t *a) {
    const char *id = ctl_str(a, "id");
    return *id ? id : ctl_str(a, "agent_id");
}

/* What the agent can take: the doc's own state when it has one, else
 * derived from the flags the etcd record and the leader keep. */
static const char *s_agent_state(const json_t *a) {
    const char *s = ctl_str(a, "state");
    if (*s) return s;
    if (json_is_false(ctl_get(a, "alive"))) return "lost";
    if (json_is_true(ctl_get(a, "drain")) || json_is_true(ctl_get(a, "draining")))
        return "draining";
    if (json_is_false(ctl_get(a, "connected"))) return "disconnected";
    return "ready";
}

/* "used/total" when the doc has both, else the total. */
static const char *s_used_total(const json_t *a, const char *used, const char *total, char *buf,
                                size_t size) {
    json_t *t = ctl_get_any(a, total, NULL);
    json_t *u = ctl_get(a, used);
    char tb[64], ub[64];
    if (!t) return "-";
    if (u) snprintf(buf, size, "%s/%s", ctl_cell(u, ub, sizeof ub), ctl_cell(t, tb, sizeof tb));
    else snprintf(buf, size, "%s", ctl_cell(t, tb, sizeof tb));
    return buf;
}

static const char *s_labels(const json_t *a, char *buf, size_t size) {
    json_t *l = ctl_get(a, "labels");
    buf[0] = '\0';
    if (json_is_object(l)) {
        const char *k;
        json_t *v;
        size_t used = 0;
        json_object_foreach(l, k, v) {
            char vb[128];
            used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%s%s=%s",
                                     used ? "," : "", k, ctl_cell(v, vb, sizeof vb));
            if (used >= size) break;
        }
    } else if (json_is_array(l)) {
        size_t i, used = 0;
        json_t *v;
        json_array_foreach(l, i, v) {
            char vb[128];
            used += (size_t)snprintf(buf + used, used < size ? size - used : 0, "%s%s",
                                     i ? "," : "", ctl_cell(v, vb, sizeof vb));
            if (used >= size) break;
        }
    }
    return buf[0] ? buf : "-";
}

static json_t *s_list(ctl_t *c) {
    int err;
    if (ctl_connect(c) < 0) return NULL;
    return ctl_list_all(c, FW_MSG_AGENT_LIST, NULL, NULL, &err);
}

/* One row of the list table. */
static void s_list_row(ctl_table_t *t, json_t *a) {
    char cpus[64], mem[64], gpus[64], tasks[64], labels[256];
    json_t *g = ctl_get_any(a, "gpus", "resources.gpus", NULL);
    if (json_is_array(g)) snprintf(gpus, sizeof gpus, "%zu", json_array_size(g));
    else ctl_cell(g, gpus, sizeof gpus);
    json_t *nt = ctl_get_any(a, "tasks", "running", "nheld", NULL);
    if (json_is_array(nt)) snprintf(tasks, sizeof tasks, "%zu", json_array_size(nt));
    else snprintf(tasks, sizeof tasks, "%s", ctl_cell(nt, cpus, sizeof cpus));
    const char *row[8] = {
        s_agent_id(a),
        *ctl_str(a, "host") ? ctl_str(a, "host") : ctl_str(a, "hostname"),
        s_agent_state(a),
        s_used_total(a, "used_cpus", "cpus", cpus, sizeof cpus),
        s_used_total(a, "used_memory_mb", "memory_mb", mem, sizeof mem),
        gpus,
        tasks,
        s_labels(a, labels, sizeof labels)};
    ctl_table_add(t, row);
}

static int s_cmd_list(ctl_t *c) {
    json_t *agents = s_list(c);
    if (!agents) return CTL_EXIT_ERROR;
    static const char *const hdr[] = {"ID", "HOST", "STATE", "CPUS", "MEMORY_MB", "GPUS",
                                      "TASKS", "LABELS"};
    return ctl_print_list(c, agents, 8, hdr, s_list_row);
}

static int s_cmd_show(ctl_t *c) {
    json_t *agents = s_list(c);
    if (!agents) return CTL_EXIT_ERROR;
    size_t i;
    json_t *a, *found = NULL;
    json_array_foreach(agents, i, a) if (strcmp(s_agent_id(a), c->argv[0]) == 0) found = a;
    int rc = CTL_EXIT_OK;
    if (!found) rc = ctl_errorf(c, "agent '%s' not found (%s)", c->argv[0],
                                fw_errname(FW_ENOTFOUND));
    else if (c->output == CTL_OUT_JSON) ctl_print_json(found);
    else ctl_print_object(found, "");
    json_decref(agents);
    return rc;
}

static int s_drain(ctl_t *c, bool drain) {
    if (ctl_connect(c) < 0) return CTL_EXIT_ERROR;
    fw_msg_t *req = ctl_request(c, FW_MSG_AGENT_DRAIN);
    if (!req) return CTL_EXIT_ERROR;
    if (fw_msg_set_str(req, "agent_id", c->argv[0]) < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "agent id '%s': %s", c->argv[0], fw_err_detail());
    }
    fw_msg_set_bool(req, "drain", drain);
    const char *reason = ctl_flag(c, "reason");
    if (reason && fw_msg_set_str(req, "reason", reason) < 0) {
        fw_msg_destroy(&req);
        return ctl_errorf(c, "--reason: %s", fw_err_detail());
    }
    json_t *doc = ctl_call_doc(c, &req, NULL);
    if (!doc) return CTL_EXIT_ERROR;
    if (c->output == CTL_OUT_JSON) ctl_print_json(doc);
    else printf("agent %s %s\n", c->argv[0], drain ? "drained: it takes no new tasks"
                                                   : "back in service");
    json_decref(doc);
    return CTL_EXIT_OK;
}

static int s_cmd_drain(ctl_t *c) { return s_drain(c, true); }
static int s_cmd_undrain(ctl_t *c) { return s_drain(c, false); }

static const ctl_flag_def s_drain_flags[] = {
    {"reason", 0, "TEXT", "Why, for the audit log."}, {NULL, 0, NULL, NULL}};

const ctl_cmd_def ctl_agent_cmds[] = {
    {"agent", "list", NULL, 0, 0, "Agents with their state, resources (used/total) and labels.",
     NULL, NULL, s_cmd_list},
    {"agent", "show", "ID", 1, 1, "Everything the coordinator knows about one agent.", NULL,
     NULL, s_cmd_show},
    {"agent", "drain", "ID", 1, 1, "Stop placing tasks on an agent; running tasks finish.",
     "The drain is kept in etcd, so it survives agent restarts and leader changes.",
     s_drain_flags, s_cmd_drain},
    {"agent", "undrain", "ID", 1, 1, "Return a drained agent to service.", NULL, s_drain_flags,
     s_cmd_undrain},
    {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL}};
