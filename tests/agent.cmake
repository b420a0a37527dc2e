# flywheel-agent (agent/): unit tests of its pieces, and the daemon against a
# real etcd and a scripted leader.
fw_add_test(NAME test_agent_resources SOURCES unit/test_agent_resources.c
  LIBS fw_agent LABELS unit TIMEOUT 30)
fw_add_test(NAME test_agent_journal SOURCES unit/test_agent_journal.c
  LIBS fw_agent LABELS unit TIMEOUT 30)
fw_add_test(NAME test_agent_log SOURCES unit/test_agent_log.c
  LIBS fw_agent LABELS unit TIMEOUT 30)
fw_add_test(NAME test_agent_task SOURCES unit/test_agent_task.c
  LIBS fw_agent LABELS unit TIMEOUT 60)
# The daemon itself against a real etcd (tests/lib/etcd_harness) and a
# scripted leader: registration, heartbeats, tasks, logs, fencing, drain,
# leader change, journal across a SIGKILL, etcd down and back, SIGTERM.
fw_add_test(NAME test_agent_daemon SOURCES unit/test_agent_daemon.c
  LIBS fw_agent fw_etcd_harness LABELS integration TIMEOUT 90)
add_dependencies(test_agent_daemon flywheel-agent)
