/* fw_fault.c - fault points (see fw_fault.h).
 *
 * Theory of operation: one small table of points under one mutex. A point
 * gets its row the first time it is hit or armed; row 0 is the wildcard "*",
 * whose counter advances on every hit of any point, so arming "*" with n
 * fails the n-th fault-point call of the operation under test whichever
 * point that is. A row is armed either "once at call k" (k is absolute:
 * calls + n when armed) or "every n-th call counted from base". The lock is
 * taken on every hit, which is fine: this file is compiled only into test
 * builds, and a fault point sits next to a system call that costs far more.
 *
 * Without FW_FAULT_INJECTION this translation unit is empty and the header
 * turns every call into a constant or a no-op. */
#include "fw_fault.h"

#ifdef FW_FAULT_INJECTION

#include "fw_err.h"
#include "fw_log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 64 points is far more than a process has; an overflowing point is simply
 * never failed (and says so once on stderr), which cannot break a test that
 * does not arm it. */
#define S_MAX_POINTS 64
#define S_NAME_MAX   48

typedef struct {
    char name[S_NAME_MAX];
    int calls;   /* calls since reset */
    int once_at; /* fail when calls reaches this (0 = not armed once) */
    int every;   /* fail every `every`-th call after every_base (0 = off) */
    int every_base;
} s_point;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_point s_points[S_MAX_POINTS] = {{.name = FW_FAULT_ANY}};
static int s_npoints = 1;
static int s_fired;
static int s_env_done;

/* Row for `name`, created when missing; NULL when the table is full. */
static s_point *s_find(const char *name, int create) {
    for (int i = 0; i < s_npoints; i++)
        if (strcmp(s_points[i].name, name) == 0) return &s_points[i];
    if (!create) return NULL;
    /* A name that does not fit is refused rather than truncated: a
     * truncated row would never match its own name again (strcmp above),
     * so every hit would add another row until the table filled. Copying
     * with a checked length (not snprintf "%s") also keeps gcc's
     * -Wformat-truncation quiet at -O3, where it cannot see the bound. */
    size_t len = strnlen(name, S_NAME_MAX);
    if (len == S_NAME_MAX) {
        fprintf(stderr, "fw_fault: point name '%.*s...' longer than %d bytes, never failed\n",
                S_NAME_MAX - 1, name, S_NAME_MAX - 1);
        return NULL;
    }
    if (s_npoints == S_MAX_POINTS) {
        fprintf(stderr, "fw_fault: point table full, '%s' is never failed\n", name);
        return NULL;
    }
    s_point *p = &s_points[s_npoints++];
    memset(p, 0, sizeof *p);
    memcpy(p->name, name, len + 1);
    return p;
}

/* Count one call on p; nonzero when it is the one to fail. */
static int s_count(s_point *p) {
    p->calls++;
    int fail = 0;
    if (p->once_at && p->calls == p->once_at) {
        p->once_at = 0;
        fail = 1;
    }
    if (p->every && (p->calls - p->every_base) % p->every == 0) fail = 1;
    return fail;
}

static void s_arm_locked(const char *point, int n, int every) {
    s_point *p = s_find(point, 1);
    if (!p || n < 1) return;
    if (every) {
        p->every = n;
        p->every_base = p->calls;
        p->once_at = 0;
    } else {
        p->once_at = p->calls + n;
        p->every = 0;
    }
}

/* Parse and arm `spec` with the lock held; all-or-nothing. */
static int s_load_locked(const char *spec) {
    struct {
        char name[S_NAME_MAX];
        int n, every;
    } items[S_MAX_POINTS];
    int count = 0;
    const char *s = spec;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        char item[128];
        if (len == 0 || len >= sizeof item || count == S_MAX_POINTS || (end && !end[1]))
            return fw_err_set(FW_EINVAL,
                              "FW_FAULT: bad item '%.*s' (expected point:n or "
                              "point:every:n)",
                              (int)len, s);
        memcpy(item, s, len);
        item[len] = '\0';
        char *colon = strchr(item, ':');
        char *num = colon ? colon + 1 : NULL;
        int every = 0;
        if (num && strncmp(num, "every:", 6) == 0) {
            every = 1;
            num += 6;
        }
        char *stop = NULL;
        long n = num ? strtol(num, &stop, 10) : 0;
        if (!colon || colon == item || (size_t)(colon - item) >= S_NAME_MAX || !num || !*num ||
            *stop || n < 1 || n > 1000000000)
            return fw_err_set(FW_EINVAL,
                              "FW_FAULT: bad item '%s' (expected point:n or "
                              "point:every:n with n >= 1)",
                              item);
        memcpy(items[count].name, item, (size_t)(colon - item));
        items[count].name[colon - item] = '\0';
        items[count].n = (int)n;
        items[count].every = every;
        count++;
        s = end ? end + 1 : s + len;
    }
    for (int i = 0; i < count; i++) s_arm_locked(items[i].name, items[i].n, items[i].every);
    return 0;
}

static void s_load_env_locked(void) {
    if (s_env_done) return;
    s_env_done = 1;
    const char *spec = getenv("FW_FAULT");
    if (spec && *spec && s_load_locked(spec) < 0)
        fprintf(stderr, "fw_fault: ignoring FW_FAULT: %s\n", fw_err_detail());
}

int fw_fault_hit(const char *point) {
    pthread_mutex_lock(&s_lock);
    s_load_env_locked();
    int fail = s_count(&s_points[0]);
    s_point *p = s_find(point, 1);
    if (p && p != &s_points[0] && s_count(p)) fail = 1;
    int call = p ? p->calls : 0;
    if (fail) s_fired++;
    pthread_mutex_unlock(&s_lock);
    if (fail) fw_info("event=fault-injected point=%s call=%d", point, call);
    return fail;
}

void fw_fault_arm(const char *point, int n) {
    pthread_mutex_lock(&s_lock);
    s_arm_locked(point, n, 0);
    pthread_mutex_unlock(&s_lock);
}

void fw_fault_arm_every(const char *point, int n) {
    pthread_mutex_lock(&s_lock);
    s_arm_locked(point, n, 1);
    pthread_mutex_unlock(&s_lock);
}

void fw_fault_reset(void) {
    pthread_mutex_lock(&s_lock);
    s_env_done = 1; /* a test that resets owns the arming from now on */
    for (int i = 0; i < s_npoints; i++) {
        s_points[i].calls = 0;
        s_points[i].once_at = 0;
        s_points[i].every = 0;
        s_points[i].every_base = 0;
    }
    s_fired = 0;
    pthread_mutex_unlock(&s_lock);
}

int fw_fault_calls(const char *point) {
    pthread_mutex_lock(&s_lock);
    s_point *p = s_find(point, 0);
    int calls = p ? p->calls : 0;
    pthread_mutex_unlock(&s_lock);
    return calls;
}

int fw_fault_fired(void) {
    pthread_mutex_lock(&s_lock);
    int n = s_fired;
    pthread_mutex_unlock(&s_lock);
    return n;
}

int fw_fault_load(const char *spec) {
    pthread_mutex_lock(&s_lock);
    int rc = s_load_locked(spec ? spec : "");
    pthread_mutex_unlock(&s_lock);
    return rc;
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int fw_fault_disabled_;
#endif
