/* fw_time.c - monotonic and wall clocks. */
#include "fw_time.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

int64_t fw_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t fw_mono_ms(void) { return fw_mono_ns() / 1000000; }

int64_t fw_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fw_wall_format(int64_t ms, char *buf, int size) {
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(buf, (size_t)size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

void fw_sleep_ms(int64_t ms) {
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int64_t fw_deadline_ms(int64_t ms) { return fw_mono_ms() + ms; }

int64_t fw_remaining_ms(int64_t deadline) {
    int64_t left = deadline - fw_mono_ms();
    return left > 0 ? left : 0;
}
