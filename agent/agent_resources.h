/* agent_resources.h - what this node offers: CPUs, memory, GPUs, labels.
 *
 * Discovery runs once at start (and the cheap load figures at every
 * heartbeat). GPUs are found through NVML (libnvidia-ml.so.1) or, failing
 * that, the CUDA runtime (libcudart.so), both opened with dlopen at run time
 * so that the agent builds and runs on machines without a driver: no
 * library, no symbol or no device all mean "no GPUs", never an error.
 *
 * The parsers (meminfo, labels) take text so tests can feed them anything. */
#ifndef AGENT_RESOURCES_H
#define AGENT_RESOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_MAX_GPUS 64 /* RESOURCES.gpus bound in fw_messages.def */

typedef struct {
    unsigned index;
    char name[129];
    uint64_t memory_mb;
    char uuid[65];
} agent_gpu_t;

typedef struct {
    unsigned cpus;
    uint64_t memory_mb;
    uint64_t disk_mb; /* free space under work_dir, 0 if unknown */
    int ngpus;
    agent_gpu_t gpus[AGENT_MAX_GPUS];
    const char *gpu_source; /* "nvml", "cudart" or "none" (static string) */
} agent_resources_t;

/* Parse /proc/meminfo text: MemTotal and MemAvailable in MiB (avail may be
 * NULL). FW_EINVAL with a detail when MemTotal is missing or malformed. A
 * missing MemAvailable (kernels before 3.14) gives MemFree. */
int agent_meminfo_parse(const char *text, uint64_t *total_mb, uint64_t *avail_mb);

/* Logical CPUs this process may run on (sched_getaffinity; sysconf fallback). */
unsigned agent_cpu_count(void);

/* GPUs through NVML, then the CUDA runtime. nvml_lib / cudart_lib name the
 * libraries to try (NULL: the usual sonames; "" skips that source). Fills
 * gpus[0..*n) (at most max), sets *source; returns 0 also when none are
 * found. Never fails: a broken driver is logged and reported as no GPUs. */
int agent_gpu_discover(const char *nvml_lib, const char *cudart_lib, agent_gpu_t *gpus, int max,
                       int *n, const char **source);

/* Everything at once. cpus_override / memory_mb_override: 0 = discover.
 * work_dir: for disk_mb (may be NULL). gpu_mode: "auto", "none". 0 or
 * FW_EIO when /proc/meminfo cannot be read and no override is given. */
int agent_resources_discover(agent_resources_t *r, unsigned cpus_override,
                             uint64_t memory_mb_override, const char *work_dir,
                             const char *gpu_mode);

/* Host memory in use now (MemTotal - MemAvailable), MiB; 0 if unknown. */
uint64_t agent_mem_used_mb(void);

/* Validate one "key=value" label: key 1-63 chars of [A-Za-z0-9._/-], value
 * 0-255 bytes of printable ASCII. On success *key_len is the length of the
 * key part. FW_EINVAL with a detail naming the label otherwise. */
int agent_label_check(const char *label, size_t *key_len);

#endif
