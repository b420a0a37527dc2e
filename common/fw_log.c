/* fw_log.c - key=value logging to stderr or a file.
 *
 * One line is formatted into a local buffer and written with a single
 * write() so that lines from several threads (or processes sharing a file
 * opened with O_APPEND) never interleave. */
#include "fw_log.h"

#include "fw_time.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int s_level = -1; /* -1: not yet read from the environment */
static int s_fd = 2;
static char s_name[64] = "";
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *s_level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

int fw_log_parse_level(const char *name) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (strcasecmp(name, names[i]) == 0) return i;
    return -1;
}

fw_log_level fw_log_get_level(void) {
    if (s_level < 0) {
        const char *env = getenv("FW_LOG_LEVEL");
        int l = env ? fw_log_parse_level(env) : -1;
        s_level = l >= 0 ? l : FW_LOG_INFO;
    }
    return (fw_log_level)s_level;
}

void fw_log_set_level(fw_log_level level) { s_level = (int)level; }

void fw_log_set_name(const char *name) {
    snprintf(s_name, sizeof s_name, "%s", name ? name : "");
}

int fw_log_open(const char *path) {
    int fd = 2;
    if (path) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) return -1;
    }
    pthread_mutex_lock(&s_lock);
    int old = s_fd;
    s_fd = fd;
    pthread_mutex_unlock(&s_lock);
    if (old != 2) close(old);
    return 0;
}

void fw_log_write(fw_log_level level, const char *func, const char *fmt, ...) {
    if ((int)level < (int)fw_log_get_level()) return;
    char line[4096];
    char ts[40];
    fw_wall_format(fw_wall_ms(), ts, sizeof ts);
    int n = snprintf(line, sizeof line, "%s %-5s %s%s%sfunc=%s ", ts, s_level_names[level],
                     s_name[0] ? "proc=" : "", s_name, s_name[0] ? " " : "", func);
    if (n < 0) return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2; /* truncated long line */
    line[len++] = '\n';
    pthread_mutex_lock(&s_lock);
    ssize_t w = write(s_fd, line, len);
    pthread_mutex_unlock(&s_lock);
    (void)w;
}

const char *fw_log_quote(const char *s, char *buf, size_t size) {
    if (size == 0) return buf;
    int needs = s[0] == '\0';
    for (const char *p = s; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20) needs = 1;
    if (!needs) {
        snprintf(buf, size, "%s", s);
        return buf;
    }
    size_t o = 0;
    buf[o++] = '"';
    for (const char *p = s; *p && o + 3 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20) {
            buf[o++] = ' ';
        } else {
            buf[o++] = (char)c;
        }
    }
    if (o + 1 < size) buf[o++] = '"';
    buf[o < size ? o : size - 1] = '\0';
    return buf;
}
