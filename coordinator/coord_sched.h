/* coord_sched.h - placement: queue order, resources, gangs, backfill.
 *
 * One pass walks the queue (priority, then submission order) and places
 * what fits:
 *   - a sharded job's ready tasks go one by one to agents with free room,
 *     round-robin so load spreads;
 *   - a gang (world size N) is placed all at once or not at all;
 *   - the first gang that does not fit gets a reservation: a set of agents
 *     that could hold it, and on each the resources it needs there. Later
 *     jobs may only use what is free beyond the reservation, so resources
 *     freeing up on those agents accumulate for the gang and nothing queued
 *     behind it can delay it (backfill).
 * A pass only changes state (coord_task_assign); the store writes it and
 * sends TASK_ASSIGN once committed. */
#ifndef COORD_SCHED_H
#define COORD_SCHED_H

#include "coord_state.h"

#include <stdint.h>

typedef struct {
    uint32_t port_min, port_max; /* rendezvous ports handed to gangs */
    uint32_t next_port;
    size_t rr;                   /* round-robin cursor over agents */
    uint64_t pass;
    /* Scratch, one entry per agent (grown as agents appear). */
    uint64_t *res_cpus, *res_mem, *res_gpus; /* reserved for the waiting gang */
    uint64_t *skip_pass;                     /* agent known full for the job at hand */
    size_t scratch_cap;
    /* Outputs of the last pass, for metrics and tests. */
    const coord_job_t *reserved_for; /* the gang holding the reservation, or NULL */
    uint32_t last_placed;
} coord_sched_t;

void coord_sched_init(coord_sched_t *sc, uint32_t port_min, uint32_t port_max);
void coord_sched_free(coord_sched_t *sc);

/* Place up to `budget` tasks. Returns how many were placed; *more (may be
 * NULL) is set when the budget ran out with work left. */
uint32_t coord_sched_pass(coord_state_t *s, coord_sched_t *sc, int64_t now_wall, int64_t now_mono,
                          uint32_t budget, bool *more);

/* How many tasks of spec fit on the agent now, keeping back `res_*`
 * (capped at cap). Exposed for tests. */
uint32_t coord_sched_fit_count(const coord_agent_t *a, const coord_spec_t *sp, uint64_t res_cpus,
                               uint64_t res_mem, uint64_t res_gpus, uint32_t cap);

#endif
