/* fw_time.h - clocks. Every timeout and period uses the monotonic clock;
 * wall time is only for humans (log lines, audit records). */
#ifndef FW_TIME_H
#define FW_TIME_H

#include <stdint.h>

/* Monotonic time in nanoseconds / milliseconds since an arbitrary origin. */
int64_t fw_mono_ns(void);
int64_t fw_mono_ms(void);

/* Wall-clock time in milliseconds since the Unix epoch. */
int64_t fw_wall_ms(void);

/* Format wall time `ms` as RFC 3339 UTC with milliseconds into buf (>= 32 bytes). */
void fw_wall_format(int64_t ms, char *buf, int size);

/* Sleep for ms milliseconds (restarts after signals). */
void fw_sleep_ms(int64_t ms);

/* A deadline `ms` from now on the monotonic clock, and how many ms remain
 * until it (0 once passed). */
int64_t fw_deadline_ms(int64_t ms);
int64_t fw_remaining_ms(int64_t deadline);

#endif
