/* agent_proc.h - task child processes: spawn, signal, reap; signals as an fd.
 *
 * Every task runs in its own process (a crash, an abort or the OOM killer
 * takes the task, never the agent) and in its own process group, so that
 * cancellation reaches the whole tree the task started (sh -c '...' and its
 * children). stdout and stderr share one pipe whose read end the agent polls
 * in its event loop; stdin is /dev/null. The agent learns of exits through
 * SIGCHLD delivered on a signalfd, so no code runs in signal context. */
#ifndef AGENT_PROC_H
#define AGENT_PROC_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;  /* also the process group id */
    int out_fd; /* read end of the stdout+stderr pipe: non-blocking, close-on-exec */
} agent_proc_t;

/* Start argv[0] (searched in PATH) with exactly the environment envp, in
 * directory cwd (NULL: the agent's). Returns once the exec has succeeded,
 * so an exec failure is reported here and not as an exit code:
 * FW_ENOTFOUND ("exec <prog>: No such file or directory"), FW_EPERM, FW_EIO;
 * the failed child is reaped. The child gets SIGKILL if the agent dies
 * (PR_SET_PDEATHSIG): an orphaned task would hold its resources with no one
 * to report it. */
int agent_proc_spawn(char *const argv[], char *const envp[], const char *cwd, agent_proc_t *p);

/* Send sig to the process group pgid (the whole task). 0, or FW_ENOTFOUND
 * when the group is gone. */
int agent_proc_kill(pid_t pgid, int sig);

/* Reap one exited child without blocking: its pid and *code (the exit
 * status, or -signal when killed), 0 when no child has exited, -1 when there
 * are no children at all. */
pid_t agent_proc_reap(int *code);

/* Block sigs (a 0-terminated list) and return a signalfd (non-blocking,
 * close-on-exec) delivering them; -1 with fw_err_detail on failure. Children
 * unblock everything before exec. */
int agent_signals_open(const int *sigs);

/* Next pending signal on fd, 0 when none. */
int agent_signals_read(int fd);

/* SIGKILL every process (other than this one) whose initial environment
 * holds an entry starting with `marker` ("FLYWHEEL_TASK_DIR=<work_dir>/tasks/"):
 * tasks orphaned by an earlier run of the agent that died (their direct
 * child got PR_SET_PDEATHSIG, grandchildren did not). Returns how many. */
int agent_proc_sweep(const char *marker);

/* "exit code 3", "killed by signal 9 (Killed)": a short text for code. */
const char *agent_exit_text(int code, char *buf, int size);

#endif
