/* fw_log.h - one logger for every Flywheel process.
 *
 * Lines are key=value so they can be grepped and asserted in tests:
 *
 *   2026-11-23T09:40:00.123Z INFO  proc=coord-1 func=s_campaign event=leader-elected epoch=7
 *
 * The message passed to fw_info() & co. is itself key=value text and should
 * start with event=<name>. Values with spaces are quoted by the caller
 * (fw_log_quote() helps). Output goes to stderr unless fw_log_open() names a
 * file. Nothing is logged per message on hot paths above DEBUG. */
#ifndef FW_LOG_H
#define FW_LOG_H

#include <stddef.h>

typedef enum { FW_LOG_DEBUG = 0, FW_LOG_INFO, FW_LOG_WARN, FW_LOG_ERROR, FW_LOG_OFF } fw_log_level;

/* Set the minimum level written (default INFO, or FW_LOG_LEVEL from the environment). */
void fw_log_set_level(fw_log_level level);
fw_log_level fw_log_get_level(void);

/* Parse "debug", "info", "warn", "error", "off"; -1 if unknown. */
int fw_log_parse_level(const char *name);

/* Name this process in every line (proc=<name>). The string is copied. */
void fw_log_set_name(const char *name);

/* Append to `path` instead of stderr; NULL goes back to stderr. 0 / -1. */
int fw_log_open(const char *path);

void fw_log_write(fw_log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copy `s` into buf as a log-safe value: quoted with \" and \\ escapes when
 * it holds spaces, quotes, '=' or control characters; returns buf. */
const char *fw_log_quote(const char *s, char *buf, size_t size);

#define fw_debug(...) \
    do { if (fw_log_get_level() <= FW_LOG_DEBUG) fw_log_write(FW_LOG_DEBUG, __func__, __VA_ARGS__); } while (0)
#define fw_info(...) fw_log_write(FW_LOG_INFO, __func__, __VA_ARGS__)
#define fw_warn(...) fw_log_write(FW_LOG_WARN, __func__, __VA_ARGS__)
#define fw_error(...) fw_log_write(FW_LOG_ERROR, __func__, __VA_ARGS__)

#endif
