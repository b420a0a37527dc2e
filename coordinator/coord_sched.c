/* coord_sched.c - one scheduling pass over the queue.
 *
 * Cost. A pass is driven by events (a submission, a result freeing room, an
 * agent arriving) and bounded by a budget of placements. Within a job, an
 * agent that cannot take one more of its tasks is skipped for the rest of
 * that job (skip_pass), so placing k tasks on m agents costs O(k + m), not
 * O(k * m). A job whose shape fits nowhere costs one look at each agent.
 *
 * Reservations are recomputed each pass from the current free resources;
 * nothing about them is stored, so they cannot go stale when agents come
 * and go or a gang is cancelled. */
#include "coord_sched.h"

#include "fw_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void coord_sched_init(coord_sched_t *sc, uint32_t port_min, uint32_t port_max) {
    memset(sc, 0, sizeof *sc);
    sc->port_min = port_min;
    sc->port_max = port_max >= port_min ? port_max : port_min;
    sc->next_port = port_min;
}

void coord_sched_free(coord_sched_t *sc) {
    free(sc->res_cpus);
    free(sc->res_mem);
    free(sc->res_gpus);
    free(sc->skip_pass);
    memset(sc, 0, sizeof *sc);
}

static int s_scratch(coord_sched_t *sc, size_t n) {
    if (n <= sc->scratch_cap) return 0;
    size_t cap = n + 16;
    uint64_t *a = realloc(sc->res_cpus, cap * sizeof *a);
    if (!a) return -1;
    sc->res_cpus = a;
    a = realloc(sc->res_mem, cap * sizeof *a);
    if (!a) return -1;
    sc->res_mem = a;
    a = realloc(sc->res_gpus, cap * sizeof *a);
    if (!a) return -1;
    sc->res_gpus = a;
    a = realloc(sc->skip_pass, cap * sizeof *a);
    if (!a) return -1;
    sc->skip_pass = a;
    for (size_t i = sc->scratch_cap; i < cap; i++) sc->skip_pass[i] = 0;
    sc->scratch_cap = cap;
    return 0;
}

static uint64_t s_free(uint64_t cap, uint64_t used) { return cap > used ? cap - used : 0; }

/* floor(avail / need) with need 0 meaning "no limit from this dimension". */
static uint64_t s_div(uint64_t avail, uint64_t need, uint64_t cap) {
    if (need == 0) return cap;
    uint64_t k = avail / need;
    return k < cap ? k : cap;
}

uint32_t coord_sched_fit_count(const coord_agent_t *a, const coord_spec_t *sp, uint64_t res_cpus,
                               uint64_t res_mem, uint64_t res_gpus, uint32_t cap) {
    if (!coord_agent_schedulable(a) || !coord_agent_eligible(a, sp)) return 0;
    uint64_t fc = s_free(a->cpus, a->used_cpus), fm = s_free(a->memory_mb, a->used_mem),
             fg = s_free((uint64_t)a->ngpus, a->used_gpus);
    if (fc < res_cpus || fm < res_mem || fg < res_gpus) return 0;
    uint64_t k = cap;
    k = s_div(fc - res_cpus, sp->cpus, k);
    k = s_div(fm - res_mem, sp->memory_mb, k);
    k = s_div(fg - res_gpus, sp->gpus, k);
    return (uint32_t)k;
}

/* Ranks of a gang an agent could hold when empty (for reservations). */
static uint32_t s_capacity_count(const coord_agent_t *a, const coord_spec_t *sp, uint32_t cap) {
    if (!coord_agent_schedulable(a) || !coord_agent_eligible(a, sp)) return 0;
    uint64_t k = cap;
    k = s_div(a->cpus, sp->cpus, k);
    k = s_div(a->memory_mb, sp->memory_mb, k);
    k = s_div((uint64_t)a->ngpus, sp->gpus, k);
    return (uint32_t)k;
}

/* Sort helper: agents by free ranks, most first (stable by index). */
typedef struct {
    size_t idx;
    uint32_t k;
} s_cand;

static int s_cand_cmp(const void *x, const void *y) {
    const s_cand *a = x, *b = y;
    if (a->k != b->k) return a->k > b->k ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static const char *s_agent_host(const coord_agent_t *a) {
    return a->host && a->host[0] ? a->host : a->id;
}

/* Try to place a whole gang now, leaving alone any reservation made for a
 * gang ahead of it in the queue. */
static bool s_place_gang(coord_state_t *s, coord_sched_t *sc, coord_job_t *j, int64_t now_wall) {
    const coord_spec_t *sp = &j->spec;
    size_t n = s->nagents;
    if (n == 0 || j->count[TASK_PENDING] != j->ntasks || j->gang_waiting) return false;
    s_cand *c = malloc(n * sizeof *c);
    if (!c) return false;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        bool r = sc->reserved_for != NULL;
        c[i].idx = i;
        c[i].k = coord_sched_fit_count(s->agentv[i], sp, r ? sc->res_cpus[i] : 0,
                                       r ? sc->res_mem[i] : 0, r ? sc->res_gpus[i] : 0,
                                       j->ntasks);
        total += c[i].k;
    }
    if (total < j->ntasks) {
        free(c);
        return false;
    }
    /* Fewest agents: fill the roomiest first, so ranks share hosts where they can. */
    qsort(c, n, sizeof *c, s_cand_cmp);
    j->gang_attempt++;
    uint32_t port = sc->next_port;
    sc->next_port = sc->next_port >= sc->port_max ? sc->port_min : sc->next_port + 1;
    char rdv[300];
    snprintf(rdv, sizeof rdv, "tcp://%s:%u", s_agent_host(s->agentv[c[0].idx]), port);
    free(j->rendezvous);
    j->rendezvous = strdup(rdv);
    uint32_t rank = 0;
    for (size_t i = 0; i < n && rank < j->ntasks; i++) {
        coord_agent_t *a = s->agentv[c[i].idx];
        for (uint32_t k = 0; k < c[i].k && rank < j->ntasks; k++, rank++)
            coord_task_assign(s, &j->tasks[rank], a, now_wall);
    }
    free(c);
    fw_info("event=gang-placed job=%s world_size=%u attempt=%u rendezvous=%s", j->id, j->ntasks,
            j->gang_attempt, j->rendezvous);
    return true;
}

/* The first gang that does not fit reserves, on agents that could hold it,
 * what it needs there. Infeasible gangs (not enough capacity in the whole
 * cluster) reserve nothing: they would block everything forever. */
static void s_reserve(coord_state_t *s, coord_sched_t *sc, coord_job_t *j) {
    const coord_spec_t *sp = &j->spec;
    size_t n = s->nagents;
    s_cand *c = malloc((n ? n : 1) * sizeof *c);
    if (!c) return;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        c[i].idx = i;
        c[i].k = s_capacity_count(s->agentv[i], sp, j->ntasks);
        total += c[i].k;
    }
    if (total < j->ntasks) {
        free(c);
        return;
    }
    /* Prefer agents with the most room free now: the gang starts soonest. */
    for (size_t i = 0; i < n; i++) {
        uint32_t now = coord_sched_fit_count(s->agentv[c[i].idx], sp, 0, 0, 0, j->ntasks);
        /* Sort key: free now first, capacity as tie-break (packed into k). */
        uint32_t hi = now < 0xffff ? now : 0xffff, lo = c[i].k < 0xffff ? c[i].k : 0xffff;
        c[i].k = c[i].k ? (hi << 16 | lo) : 0;
    }
    qsort(c, n, sizeof *c, s_cand_cmp);
    uint32_t left = j->ntasks;
    for (size_t i = 0; i < n && left > 0; i++) {
        if (!c[i].k) break;
        uint32_t k = s_capacity_count(s->agentv[c[i].idx], sp, left);
        size_t a = c[i].idx;
        sc->res_cpus[a] = (uint64_t)k * sp->cpus;
        sc->res_mem[a] = (uint64_t)k * sp->memory_mb;
        sc->res_gpus[a] = (uint64_t)k * sp->gpus;
        left -= k;
    }
    sc->reserved_for = j;
    free(c);
}

/* Next agent (round-robin) that takes one more task of j, or NULL. */
static coord_agent_t *s_pick(coord_state_t *s, coord_sched_t *sc, const coord_job_t *j,
                             uint64_t stamp) {
    size_t n = s->nagents;
    for (size_t step = 0; step < n; step++) {
        size_t i = (sc->rr + step) % n;
        if (sc->skip_pass[i] == stamp) continue;
        coord_agent_t *a = s->agentv[i];
        bool r = sc->reserved_for != NULL;
        if (coord_agent_fits(a, &j->spec, r ? sc->res_cpus[i] : 0, r ? sc->res_mem[i] : 0,
                             r ? sc->res_gpus[i] : 0)) {
            sc->rr = (i + 1) % n;
            return a;
        }
        sc->skip_pass[i] = stamp; /* full for this job: skip it until the next job */
    }
    return NULL;
}

uint32_t coord_sched_pass(coord_state_t *s, coord_sched_t *sc, int64_t now_wall, int64_t now_mono,
                          uint32_t budget, bool *more) {
    (void)now_mono;
    if (more) *more = false;
    sc->reserved_for = NULL;
    sc->last_placed = 0;
    if (s->nqueue == 0 || s->nagents == 0) return 0;
    if (s_scratch(sc, s->nagents) < 0) return 0;
    memset(sc->res_cpus, 0, s->nagents * sizeof *sc->res_cpus);
    memset(sc->res_mem, 0, s->nagents * sizeof *sc->res_mem);
    memset(sc->res_gpus, 0, s->nagents * sizeof *sc->res_gpus);
    uint32_t placed = 0;
    size_t qi = 0;
    while (qi < s->nqueue) {
        coord_job_t *j = s->queue[qi];
        uint64_t stamp = ++sc->pass;
        if (j->spec.gang) {
            /* The reservation belongs to the first gang that did not fit;
             * every gang after it must leave that reservation alone. */
            if (s_place_gang(s, sc, j, now_wall))
                placed += j->ntasks;
            else if (!sc->reserved_for)
                s_reserve(s, sc, j);
        } else {
            for (;;) {
                if (placed >= budget) {
                    if (more) *more = true;
                    goto out;
                }
                coord_agent_t *a = s_pick(s, sc, j, stamp);
                if (!a) break;
                coord_task_t *t = coord_job_take_ready(s, j);
                if (!t) break;
                coord_task_assign(s, t, a, now_wall);
                placed++;
            }
        }
        /* A job that left the queue shifted the rest down by one. */
        if (qi < s->nqueue && s->queue[qi] == j) qi++;
    }
out:
    sc->last_placed = placed;
    return placed;
}
