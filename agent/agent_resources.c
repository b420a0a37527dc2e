/* agent_resources.c - CPU, memory, disk and GPU discovery; label checks.
 *
 * Theory of operation
 * -------------------
 * CPUs are the ones this process may run on (sched_getaffinity), so an agent
 * started under taskset or in a cpuset-limited container offers what it can
 * really use. Memory is MemTotal from /proc/meminfo. Both can be overridden
 * by configuration (agent.cpus, agent.memory_mb) to carve a node up.
 *
 * GPUs: the agent must build and run where no NVIDIA driver is installed, so
 * it links neither NVML nor the CUDA runtime. It dlopen()s NVML first (it
 * reports every device without creating a CUDA context, which would pin
 * memory on each GPU for the agent's lifetime) and falls back to the CUDA
 * runtime. Every failure on the way - library absent, symbol absent, init
 * failing (driver/library mismatch), a device query failing - is logged once
 * and means "no GPUs from this source"; discovery itself never fails.
 *
 * The CUDA runtime fallback reads cudaDeviceProp through offsets rather
 * than the header (which we do not have at build time). The leading fields
 * of that struct (name[256], uuid[16], luid[8], luidDeviceNodeMask,
 * totalGlobalMem) have kept these offsets since CUDA 10; the buffer is far
 * larger than any version of the struct, so a newer runtime cannot write
 * past it. */
#include "agent_resources.h"

#include "fw_err.h"
#include "fw_file.h"
#include "fw_log.h"

#include <ctype.h>
#include <dlfcn.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* ----------------------------------------------------------- memory */

/* Value in kB of "<key>:   <n> kB" in meminfo text; -1 if absent/garbled. */
static int s_meminfo_field(const char *text, const char *key, uint64_t *kb) {
    size_t klen = strlen(key);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, key, klen) == 0 && p[klen] == ':') {
            const char *q = p + klen + 1;
            while (*q == ' ' || *q == '\t') q++;
            if (!isdigit((unsigned char)*q)) return -1;
            char *end;
            unsigned long long v = strtoull(q, &end, 10);
            while (*end == ' ' || *end == '\t') end++;
            /* The kernel always writes "kB"; anything else means this is not
             * the file we think it is. */
            if (strncmp(end, "kB", 2) != 0) return -1;
            *kb = v;
            return 0;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

int agent_meminfo_parse(const char *text, uint64_t *total_mb, uint64_t *avail_mb) {
    if (!text || !total_mb) return fw_err_set(FW_EINVAL, "meminfo: NULL argument");
    uint64_t total, avail;
    if (s_meminfo_field(text, "MemTotal", &total) < 0 || total == 0)
        return fw_err_set(FW_EINVAL, "meminfo: no valid \"MemTotal: <n> kB\" line");
    if (s_meminfo_field(text, "MemAvailable", &avail) < 0 &&
        s_meminfo_field(text, "MemFree", &avail) < 0)
        avail = 0;
    *total_mb = total / 1024;
    if (avail_mb) *avail_mb = (avail > total ? total : avail) / 1024;
    return 0;
}

static int s_read_meminfo(uint64_t *total_mb, uint64_t *avail_mb) {
    char *text = NULL;
    int rc = fw_file_read("/proc/meminfo", 1 << 20, &text, NULL);
    if (rc < 0) return rc;
    rc = agent_meminfo_parse(text, total_mb, avail_mb);
    free(text);
    return rc;
}

uint64_t agent_mem_used_mb(void) {
    uint64_t total, avail;
    if (s_read_meminfo(&total, &avail) < 0) return 0;
    return total - avail;
}

/* -------------------------------------------------------------- cpus */

unsigned agent_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* -------------------------------------------------------------- NVML */

typedef int nvml_ret;
typedef void *nvml_device;
typedef struct {
    unsigned long long total, free, used;
} nvml_memory;

static void s_copy(char *dst, size_t size, const char *src) {
    size_t n = src ? strnlen(src, size - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
    /* Names come from a driver; keep the wire (UTF-8 STR) and logs sane. */
    for (char *p = dst; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) *p = '?';
}

static int s_nvml(const char *lib, agent_gpu_t *gpus, int max, int *n) {
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fw_debug("event=gpu-probe source=nvml lib=%s result=absent", lib);
        return -1;
    }
    nvml_ret (*init)(void) = (nvml_ret(*)(void))dlsym(h, "nvmlInit_v2");
    nvml_ret (*shutdown)(void) = (nvml_ret(*)(void))dlsym(h, "nvmlShutdown");
    nvml_ret (*count)(unsigned *) = (nvml_ret(*)(unsigned *))dlsym(h, "nvmlDeviceGetCount_v2");
    nvml_ret (*by_index)(unsigned, nvml_device *) =
        (nvml_ret(*)(unsigned, nvml_device *))dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    nvml_ret (*get_name)(nvml_device, char *, unsigned) =
        (nvml_ret(*)(nvml_device, char *, unsigned))dlsym(h, "nvmlDeviceGetName");
    nvml_ret (*get_mem)(nvml_device, nvml_memory *) =
        (nvml_ret(*)(nvml_device, nvml_memory *))dlsym(h, "nvmlDeviceGetMemoryInfo");
    nvml_ret (*get_uuid)(nvml_device, char *, unsigned) =
        (nvml_ret(*)(nvml_device, char *, unsigned))dlsym(h, "nvmlDeviceGetUUID");
    if (!init || !shutdown || !count || !by_index || !get_name || !get_mem || !get_uuid) {
        fw_warn("event=gpu-probe source=nvml lib=%s result=missing-symbols", lib);
        dlclose(h);
        return -1;
    }
    nvml_ret r = init();
    if (r != 0) {
        fw_warn("event=gpu-probe source=nvml lib=%s result=init-failed nvml_error=%d", lib, r);
        dlclose(h);
        return -1;
    }
    unsigned cnt = 0;
    int rc = -1;
    if ((r = count(&cnt)) != 0) {
        fw_warn("event=gpu-probe source=nvml result=count-failed nvml_error=%d", r);
        goto done;
    }
    *n = 0;
    for (unsigned i = 0; i < cnt && *n < max; i++) {
        nvml_device d = NULL;
        char name[256] = "", uuid[128] = "";
        nvml_memory mem = {0, 0, 0};
        if ((r = by_index(i, &d)) != 0 || (r = get_name(d, name, sizeof name)) != 0 ||
            (r = get_mem(d, &mem)) != 0) {
            /* One broken device (fallen off the bus) must not hide the rest. */
            fw_warn("event=gpu-probe source=nvml index=%u result=query-failed nvml_error=%d", i, r);
            continue;
        }
        if (get_uuid(d, uuid, sizeof uuid) != 0) uuid[0] = '\0';
        agent_gpu_t *g = &gpus[(*n)++];
        g->index = i;
        s_copy(g->name, sizeof g->name, name);
        s_copy(g->uuid, sizeof g->uuid, uuid);
        g->memory_mb = mem.total / (1024 * 1024);
    }
    rc = 0;
done:
    shutdown();
    dlclose(h);
    return rc;
}

/* ------------------------------------------------------- CUDA runtime */

#define S_PROP_BUF      16384 /* cudaDeviceProp is ~1 KiB in CUDA 12 */
#define S_PROP_UUID     256
#define S_PROP_TOTALMEM 288

static int s_cudart(const char *lib, agent_gpu_t *gpus, int max, int *n) {
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fw_debug("event=gpu-probe source=cudart lib=%s result=absent", lib);
        return -1;
    }
    int (*count)(int *) = (int (*)(int *))dlsym(h, "cudaGetDeviceCount");
    /* CUDA 12 renamed the entry point; the header maps the old name to it. */
    int (*props)(void *, int) = (int (*)(void *, int))dlsym(h, "cudaGetDeviceProperties_v2");
    if (!props) props = (int (*)(void *, int))dlsym(h, "cudaGetDeviceProperties");
    if (!count || !props) {
        fw_warn("event=gpu-probe source=cudart lib=%s result=missing-symbols", lib);
        dlclose(h);
        return -1;
    }
    int cnt = 0, r = count(&cnt);
    if (r != 0) {
        /* cudaErrorNoDevice (100) and cudaErrorInsufficientDriver (35) land here. */
        fw_info("event=gpu-probe source=cudart result=no-device cuda_error=%d", r);
        return -1; /* no dlclose: the runtime registers exit handlers */
    }
    unsigned char *buf = malloc(S_PROP_BUF);
    if (!buf) return -1;
    *n = 0;
    for (int i = 0; i < cnt && *n < max; i++) {
        memset(buf, 0, S_PROP_BUF);
        if ((r = props(buf, i)) != 0) {
            fw_warn("event=gpu-probe source=cudart index=%d result=query-failed cuda_error=%d", i,
                    r);
            continue;
        }
        agent_gpu_t *g = &gpus[(*n)++];
        char name[257];
        memcpy(name, buf, 256);
        name[256] = '\0';
        g->index = (unsigned)i;
        s_copy(g->name, sizeof g->name, name);
        const unsigned char *u = buf + S_PROP_UUID;
        snprintf(g->uuid, sizeof g->uuid,
                 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                 u[14], u[15]);
        size_t total;
        memcpy(&total, buf + S_PROP_TOTALMEM, sizeof total);
        g->memory_mb = total / (1024 * 1024);
    }
    free(buf);
    return 0;
}

int agent_gpu_discover(const char *nvml_lib, const char *cudart_lib, agent_gpu_t *gpus, int max,
                       int *n, const char **source) {
    static const char *nvml_default[] = {"libnvidia-ml.so.1", "libnvidia-ml.so", NULL};
    static const char *cudart_default[] = {"libcudart.so", "libcudart.so.12", "libcudart.so.11.0",
                                           NULL};
    *n = 0;
    *source = "none";
    const char *one[2] = {NULL, NULL};
    const char **libs = nvml_default;
    if (nvml_lib) {
        one[0] = *nvml_lib ? nvml_lib : NULL;
        libs = one;
    }
    for (int i = 0; libs[i]; i++) {
        if (s_nvml(libs[i], gpus, max, n) == 0) {
            *source = "nvml";
            return 0;
        }
    }
    libs = cudart_default;
    if (cudart_lib) {
        one[0] = *cudart_lib ? cudart_lib : NULL;
        libs = one;
    }
    for (int i = 0; libs[i]; i++) {
        if (s_cudart(libs[i], gpus, max, n) == 0) {
            *source = "cudart";
            return 0;
        }
    }
    *n = 0;
    return 0;
}

/* -------------------------------------------------------- everything */

int agent_resources_discover(agent_resources_t *r, unsigned cpus_override,
                             uint64_t memory_mb_override, const char *work_dir,
                             const char *gpu_mode) {
    memset(r, 0, sizeof *r);
    r->cpus = cpus_override ? cpus_override : agent_cpu_count();
    if (memory_mb_override) {
        r->memory_mb = memory_mb_override;
    } else {
        int rc = s_read_meminfo(&r->memory_mb, NULL);
        if (rc < 0) {
            char why[512]; /* fw_err_set formats into the buffer fw_err_detail() returns */
            snprintf(why, sizeof why, "%s", fw_err_detail());
            return fw_err_set(rc, "memory discovery: %s (set agent.memory_mb)", why);
        }
    }
    struct statvfs vfs;
    if (work_dir && statvfs(work_dir, &vfs) == 0)
        r->disk_mb = (uint64_t)vfs.f_bavail * vfs.f_frsize / (1024 * 1024);
    if (gpu_mode && strcmp(gpu_mode, "none") == 0) {
        r->gpu_source = "none";
    } else {
        agent_gpu_discover(NULL, NULL, r->gpus, AGENT_MAX_GPUS, &r->ngpus, &r->gpu_source);
    }
    return 0;
}

/* ------------------------------------------------------------ labels */

int agent_label_check(const char *label, size_t *key_len) {
    if (!label) return fw_err_set(FW_EINVAL, "label: NULL");
    const char *eq = strchr(label, '=');
    if (!eq) return fw_err_set(FW_EINVAL, "label \"%.80s\": expected key=value", label);
    size_t k = (size_t)(eq - label);
    if (k == 0 || k > 63)
        return fw_err_set(FW_EINVAL, "label \"%.80s\": key must be 1-63 characters", label);
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)label[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-' && c != '/')
            return fw_err_set(FW_EINVAL, "label \"%.80s\": key character '%c' not in [A-Za-z0-9._/-]",
                              label, isprint(c) ? c : '?');
    }
    size_t v = strlen(eq + 1);
    if (v > 255) return fw_err_set(FW_EINVAL, "label \"%.80s\": value over 255 bytes", label);
    for (size_t i = 0; i < v; i++) {
        unsigned char c = (unsigned char)eq[1 + i];
        if (c < 0x20 || c >= 0x7f)
            return fw_err_set(FW_EINVAL, "label \"%.80s\": value must be printable ASCII", label);
    }
    if (key_len) *key_len = k;
    return 0;
}
