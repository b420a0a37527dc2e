/* fw_fault.h - named fault points that fail the N-th call in test builds.
 *
 * Code that can fail in ways tests cannot provoke on demand (fsync, rename,
 * a socket send, an etcd call) asks a named point first:
 *
 *     if (fw_fault_hit("file.fsync")) { errno = EIO; rc = -1; } else rc = fsync(fd);
 *
 * Tests then fail the N-th call and loop N = 1, 2, 3 ... (SQLite style),
 * asserting a clean error and unchanged invariants each time, until a run
 * finishes without the armed fault firing:
 *
 *     for (int n = 1;; n++) {
 *         fw_fault_reset();
 *         fw_fault_arm("*", n);            // the n-th hit of any point fails
 *         int rc = operation_under_test();
 *         if (fw_fault_fired() == 0) { CHECK(rc == 0); break; }
 *         CHECK(rc < 0); ... check invariants ...
 *     }
 *
 * Release builds pay nothing: unless FW_FAULT_INJECTION is defined (CMake
 * option ENABLE_FAULT_INJECTION), fw_fault_hit() is the constant 0 and the
 * other calls are no-ops, so the optimiser deletes the branches. Tests that
 * need faults in every build compile fw_fault.c and the module under test
 * into their executable with FW_FAULT_INJECTION=1 (see tests/config.cmake).
 *
 * Integration tests arm faults in daemons through the environment, read on
 * the first fw_fault_hit() of the process:
 *
 *     FW_FAULT="file.fsync:2,etcd.txn:every:3"
 *
 * "point:n" fails the n-th call of point once; "point:every:n" fails every
 * n-th call; the point "*" counts the hits of all points together. A
 * malformed FW_FAULT is reported on stderr and ignored.
 *
 * Point names are "<module>.<operation>" and listed where they are used
 * (fw_file.h lists the file points). All calls are thread-safe. */
#ifndef FW_FAULT_H
#define FW_FAULT_H

/* Wildcard point: counts the hits of every point together. */
#define FW_FAULT_ANY "*"

#ifdef FW_FAULT_INJECTION

/* Nonzero when this call of `point` should fail (and logs
 * event=fault-injected point=... call=N). Counts the call either way. */
int fw_fault_hit(const char *point);

/* Fail the n-th call of `point` from now, once (n >= 1). Replaces any
 * earlier arming of the same point. */
void fw_fault_arm(const char *point, int n);

/* Fail every n-th call of `point` from now (n = 1: every call). */
void fw_fault_arm_every(const char *point, int n);

/* Disarm every point and zero every counter (including fw_fault_fired()).
 * Does not re-read FW_FAULT. */
void fw_fault_reset(void);

/* Calls of `point` seen since the last reset ("*": calls of all points). */
int fw_fault_calls(const char *point);

/* Faults injected since the last reset. */
int fw_fault_fired(void);

/* Arm from a spec in FW_FAULT syntax ("a:2,b:every:3"). 0, or FW_EINVAL with
 * a detail naming the bad item (nothing is armed then). */
int fw_fault_load(const char *spec);

#else /* release build: the constant 0 and no-ops */

#define fw_fault_hit(point)          ((void)(point), 0)
#define fw_fault_arm(point, n)       ((void)(point), (void)(n))
#define fw_fault_arm_every(point, n) ((void)(point), (void)(n))
#define fw_fault_reset()             ((void)0)
#define fw_fault_calls(point)        ((void)(point), 0)
#define fw_fault_fired()             0
#define fw_fault_load(spec)          ((void)(spec), 0)

#endif
#endif
