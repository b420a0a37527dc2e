/* agent_ml.h - the ML executors: finetune, embed and eval tasks run
 * flywheel-engine over inputs from the shared artifact store.
 *
 * Each run() resolves the spec's "resolved" refs to local files (model trees
 * materialised once per digest, dataset blobs through the agent's cache),
 * spawns the engine, follows its JSON output lines (progress, checkpoints
 * put into the store) and, on exit 0, uploads the outputs and writes the
 * result object of the issue 6 contract. docs/executors.md has the details. */
#ifndef AGENT_ML_H
#define AGENT_ML_H

#include "agent_task.h"

#include <stddef.h>

int agent_ml_run_finetune(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a);
int agent_ml_run_embed(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a);
int agent_ml_run_eval(agent_runner_t *r, agent_task_t *t, const agent_assign_t *a);

/* The flywheel-engine binary into buf: `configured` when not empty, else
 * flywheel-engine beside the running executable (/proc/self/exe), else
 * <that dir>/engine/flywheel-engine (the build tree), else the bare name
 * (a PATH lookup at exec). Always fills buf. */
void agent_ml_engine_path(const char *configured, char *buf, size_t size);

#endif
