/* agent_proc.c - fork/exec of task processes and their supervision.
 *
 * Theory of operation
 * -------------------
 * The agent is multi-threaded (ZeroMQ I/O threads), so between fork() and
 * exec() the child may only call async-signal-safe functions: no malloc, no
 * stdio, no logging. Everything it needs (argv, envp, the fds) is prepared
 * by the parent before fork().
 *
 * Exec failures come back through a close-on-exec "status" pipe: the child
 * writes errno into it if execvpe() returns; a successful exec closes it, so
 * the parent reads 0 bytes. The parent thus knows, before returning, whether
 * the task started at all - "command not found" is a clear error in the
 * result, not a mysterious exit code 127.
 *
 * Reaping: SIGCHLD is blocked in the agent and read from a signalfd in the
 * event loop, which then calls agent_proc_reap() until it returns 0; one
 * SIGCHLD can stand for several exits. */
#include "agent_proc.h"

#include "fw_err.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static void s_child(char *const argv[], char *const envp[], const char *cwd, int null_fd,
                    int out_w, int status_w, pid_t parent) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* the agent died before prctl */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Ignored dispositions survive exec (the agent ignores SIGPIPE). */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL);
    if (dup2(null_fd, 0) < 0 || dup2(out_w, 1) < 0 || dup2(out_w, 2) < 0) goto fail;
    if (status_w != 3) {
        if (dup3(status_w, 3, O_CLOEXEC) < 0) goto fail;
        status_w = 3;
    }
    /* Nothing else of the agent's leaks into the task (sockets, etcd). */
    close_range(4, ~0U, 0);
    if (cwd && chdir(cwd) < 0) goto fail;
    execvpe(argv[0], argv, envp);
fail:;
    int e = errno;
    ssize_t w = write(status_w, &e, sizeof e);
    (void)w;
    _exit(127);
}

int agent_proc_spawn(char *const argv[], char *const envp[], const char *cwd, agent_proc_t *p) {
    p->pid = -1;
    p->out_fd = -1;
    if (!argv || !argv[0] || !*argv[0]) return fw_err_set(FW_EINVAL, "spawn: empty argv");
    int out[2] = {-1, -1}, status[2] = {-1, -1}, null_fd = -1, rc;
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0 ||
        (null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        rc = fw_err_set(FW_EIO, "spawn %s: pipe: %s", argv[0], strerror(errno));
        goto out;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        rc = fw_err_set(FW_EIO, "spawn %s: fork: %s", argv[0], strerror(errno));
        goto out;
    }
    if (pid == 0) s_child(argv, envp, cwd, null_fd, out[1], status[1], parent);
    /* Also here, so the group exists before anyone signals it. */
    setpgid(pid, pid);
    close(status[1]);
    status[1] = -1;
    int child_errno = 0;
    ssize_t r;
    do {
        r = read(status[0], &child_errno, sizeof child_errno);
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        int code = child_errno == ENOENT ? FW_ENOTFOUND
                   : (child_errno == EACCES || child_errno == EPERM) ? FW_EPERM
                                                                     : FW_EIO;
        rc = fw_err_set(code, "exec %s%s%s: %s", argv[0], cwd ? " in " : "", cwd ? cwd : "",
                        strerror(child_errno));
        goto out;
    }
    int fl = fcntl(out[0], F_GETFL);
    fcntl(out[0], F_SETFL, fl | O_NONBLOCK);
    p->pid = pid;
    p->out_fd = out[0];
    out[0] = -1;
    rc = 0;
out:
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0) close(out[i]);
        if (status[i] >= 0) close(status[i]);
    }
    if (null_fd >= 0) close(null_fd);
    return rc;
}

int agent_proc_kill(pid_t pgid, int sig) {
    if (pgid <= 1) return fw_err_set(FW_EINVAL, "kill: bad process group %d", (int)pgid);
    if (kill(-pgid, sig) == 0) return 0;
    /* The leader may have exited while its group lives on, or the group was
     * never formed (setpgid lost a race with exec); try the pid itself. */
    if (kill(pgid, sig) == 0) return 0;
    return fw_err_set(FW_ENOTFOUND, "kill %d: %s", (int)pgid, strerror(errno));
}

pid_t agent_proc_reap(int *code) {
    int st;
    pid_t pid;
    do {
        pid = waitpid(-1, &st, WNOHANG);
    } while (pid < 0 && errno == EINTR);
    if (pid <= 0) return pid < 0 ? -1 : 0;
    if (WIFEXITED(st))
        *code = WEXITSTATUS(st);
    else if (WIFSIGNALED(st))
        *code = -WTERMSIG(st);
    else
        *code = -1;
    return pid;
}

int agent_signals_open(const int *sigs) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; sigs[i]; i++) sigaddset(&set, sigs[i]);
    /* pthread_sigmask would do too: this runs before any thread starts, so
     * every later thread (ZeroMQ's) inherits the mask and never takes them. */
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return fw_err_set(FW_EIO, "sigprocmask: %s", strerror(errno)), -1;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return fw_err_set(FW_EIO, "signalfd: %s", strerror(errno)), -1;
    return fd;
}

int agent_signals_read(int fd) {
    struct signalfd_siginfo si;
    ssize_t r;
    do {
        r = read(fd, &si, sizeof si);
    } while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof si ? (int)si.ssi_signo : 0;
}

/* Whether /proc/<pid>/environ has an entry starting with marker. */
static bool s_environ_has(pid_t pid, const char *marker, char *buf, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false; /* gone, or not ours to read: not one of our tasks */
    size_t len = 0;
    ssize_t r;
    while (len < size - 1 && (r = read(fd, buf + len, size - 1 - len)) > 0) len += (size_t)r;
    close(fd);
    size_t mlen = strlen(marker);
    for (size_t i = 0; i < len; i += strnlen(buf + i, len - i) + 1)
        if (len - i >= mlen && memcmp(buf + i, marker, mlen) == 0) return true;
    return false;
}

int agent_proc_sweep(const char *marker) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    char *buf = malloc(256 << 10);
    if (!buf) {
        closedir(d);
        return 0;
    }
    int n = 0;
    pid_t self = getpid();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0])) continue;
        pid_t pid = (pid_t)atoi(de->d_name);
        if (pid == self || pid <= 1) continue;
        if (s_environ_has(pid, marker, buf, 256 << 10) && kill(pid, SIGKILL) == 0) n++;
    }
    free(buf);
    closedir(d);
    return n;
}

const char *agent_exit_text(int code, char *buf, int size) {
    if (code >= 0)
        snprintf(buf, (size_t)size, "exit code %d", code);
    else
        snprintf(buf, (size_t)size, "killed by signal %d (%s)", -code, strsignal(-code));
    return buf;
}
