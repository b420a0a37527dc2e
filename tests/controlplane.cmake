# Control plane (coordinator + agents + flywheelctl + the Python client): tests that drive
# the real binaries. Each is a pytest module under tests/integration/cp_*.py (or the client's
# own python/tests); every module starts its own local cluster (scripts/cluster) in a fresh
# temporary directory, with short periods (election.ttl 2s, agent.lease_ttl 3s, heartbeat
# 500ms, see cp_harness.py), and always stops it by pid, pass or fail (a watchdog process
# stops it too if ctest kills the test at its TIMEOUT). The whole set takes about a minute
# with ctest -j2; TIMEOUTs are about 5x the measured times.
#
# They need a python3 that has pyzmq, msgpack and pytest (Debian: python3-zmq,
# python3-msgpack, python3-pytest). A python3 first in PATH (pyenv, a venv) often lacks them,
# so the first candidate that imports them is used; FW_CP_PYTHON overrides the choice.
set(FW_CP_PYTHON "" CACHE FILEPATH "python3 with pyzmq, msgpack and pytest (control-plane tests)")
if(NOT FW_CP_PYTHON)
  find_program(FW_CP_PYTHON_ON_PATH python3)
  foreach(cand /usr/bin/python3 ${FW_CP_PYTHON_ON_PATH} /usr/local/bin/python3)
    if(EXISTS "${cand}")
      execute_process(COMMAND "${cand}" -c "import zmq, msgpack, pytest"
        RESULT_VARIABLE fw_cp_rc OUTPUT_QUIET ERROR_QUIET)
      if(fw_cp_rc EQUAL 0)
        set(FW_CP_PYTHON "${cand}" CACHE FILEPATH
          "python3 with pyzmq, msgpack and pytest (control-plane tests)" FORCE)
        break()
      endif()
    endif()
  endforeach()
endif()
if(NOT FW_CP_PYTHON)
  message(WARNING "no python3 with pyzmq, msgpack and pytest: the cp_* tests will fail "
    "(install python3-zmq python3-msgpack python3-pytest, or set FW_CP_PYTHON)")
  set(FW_CP_PYTHON python3)
endif()

# fw_add_pytest(NAME n FILE path LABELS l.. TIMEOUT s) - one pytest module (or folder) as a
# ctest entry, with the same environment fw_add_test gives C tests, so the module runs the
# binaries of the build directory ctest runs in (FW_BINARY_DIR).
function(fw_add_pytest)
  cmake_parse_arguments(T "" "NAME;FILE;TIMEOUT" "LABELS" ${ARGN})
  add_test(NAME ${T_NAME}
    COMMAND ${FW_CP_PYTHON} -m pytest -q -p no:cacheprovider -rfE ${T_FILE}
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "FW_SOURCE_DIR=${PROJECT_SOURCE_DIR};FW_BINARY_DIR=${PROJECT_BINARY_DIR};FW_SHARED_DIR=${PROJECT_SOURCE_DIR}/../shared;PYTHONPATH=${PROJECT_SOURCE_DIR}/python:${PROJECT_SOURCE_DIR}/python/tests:${PROJECT_SOURCE_DIR}/tests/integration;PYTHONDONTWRITEBYTECODE=1")
endfunction()

set(CP ${CMAKE_CURRENT_SOURCE_DIR}/integration)

# The Python client alone: wire format against fw_messages.def, client behaviour against an
# in-process fake coordinator (redirects, timeouts, paging, errors). No daemons.
fw_add_pytest(NAME cp_python_unit FILE ${PROJECT_SOURCE_DIR}/python/tests LABELS unit
  TIMEOUT 60)

# flywheelctl without a cluster: --help everywhere, usage errors, spec files, fake coordinator.
fw_add_pytest(NAME cp_ctl_offline FILE ${CP}/cp_ctl_offline.py LABELS integration TIMEOUT 90)

# A live cluster (2 coordinators, 2 agents): scripts/cluster up/status/down, every flywheelctl
# command with -o json, job lifecycle, drain, auth (bad token, user command job), HTTP
# /healthz /readyz /metrics (promtool) on leader and standby.
fw_add_pytest(NAME cp_cluster_ctl FILE ${CP}/cp_cluster_ctl.py LABELS integration TIMEOUT 150)

# The Python client and the example notebook (jupyter nbconvert --execute) on a live cluster.
fw_add_pytest(NAME cp_python_live FILE ${CP}/cp_python_live.py LABELS integration TIMEOUT 150)

# Gang scheduling: 3 ranks on 2 free slots wait, then start when a third frees up.
fw_add_pytest(NAME cp_gang FILE ${CP}/cp_gang.py LABELS integration TIMEOUT 120)

# Garbage to both ZeroMQ endpoints: random bytes, truncated, oversized, wrong fields.
fw_add_pytest(NAME cp_fault_frames FILE ${CP}/cp_fault_frames.py LABELS fault TIMEOUT 120)

# 300-shard command job on 2 coordinators + 3 agents; SIGKILL the leader mid-job.
fw_add_pytest(NAME cp_fault_leader_kill FILE ${CP}/cp_fault_leader_kill.py LABELS fault
  TIMEOUT 180)

# SIGKILL an agent mid-job; restart etcd mid-job.
fw_add_pytest(NAME cp_fault_agent_etcd FILE ${CP}/cp_fault_agent_etcd.py LABELS fault
  TIMEOUT 240)

# SIGSTOP the leader past its TTL, SIGCONT it: it steps down; agents keep the new epoch.
fw_add_pytest(NAME cp_fault_stale_leader FILE ${CP}/cp_fault_stale_leader.py LABELS fault
  TIMEOUT 150)

# job logs / job logs -f (flywheelctl and the Python client) across a SIGKILL of the leader:
# every line exactly once, and a fresh read from the new leader.
fw_add_pytest(NAME cp_logs_failover FILE ${CP}/cp_logs_failover.py LABELS fault TIMEOUT 150)

# Tasks killed by SIGKILL (OOM-like) and SIGSEGV fail with the signal named, are retried up
# to max_retries, and the agent keeps serving; cancel = SIGTERM, then SIGKILL after the grace.
fw_add_pytest(NAME cp_task_death FILE ${CP}/cp_task_death.py LABELS fault TIMEOUT 150)

# Results produced while no coordinator leads wait in the agent's journal, are accepted
# exactly once by the new leader, and a replay of them (agent restart) changes nothing.
fw_add_pytest(NAME cp_journal FILE ${CP}/cp_journal.py LABELS fault TIMEOUT 150)

# CURVE on (scripts/cluster up --curve, flywheelctl cluster gen-cert): agents, flywheelctl
# and the Python client work over it; clients without the key or with a wrong one get nothing.
fw_add_pytest(NAME cp_curve FILE ${CP}/cp_curve.py LABELS integration TIMEOUT 120)

# etcd as the coordinator leaves it: "schema": 1 in every value, the audit log's entries
# (epoch, ordered task transitions); daemons refuse unknown config keys naming key and line.
fw_add_pytest(NAME cp_etcd_state FILE ${CP}/cp_etcd_state.py LABELS integration TIMEOUT 90)

# Live scheduling: queue order by priority then submission; a gang that loses an agent is
# retried whole (all ranks attempt 2, survivors' attempt 1 stopped).
fw_add_pytest(NAME cp_sched FILE ${CP}/cp_sched.py LABELS fault TIMEOUT 120)

# Datasets end to end (issue 6): flywheelctl dataset add/list/show/download/split through the
# submission socket into the shared artifact store and etcd; bad lines, idempotent re-add,
# corrupt store copy, leader SIGKILL (the standby serves the shared store).
fw_add_pytest(NAME cp_dataset FILE ${CP}/cp_dataset.py LABELS integration TIMEOUT 120)

# The model registry (issue 6): flywheelctl model register/list/show/versions/download and
# alias set/rm on a live cluster: idempotent versions with lineage, protected aliases (user
# refused and audited, admin allowed), two concurrent alias sets, byte-identical download,
# and the standby serving show/download after SIGKILL of the leader.
fw_add_pytest(NAME cp_model FILE ${CP}/cp_model.py LABELS integration TIMEOUT 120)

# flywheelctl eval compare on per-example files of two tiny models (flywheel-engine eval
# --per-example): identical models, A vs B against the engine's summaries, determinism by
# seed, mismatched datasets, bad files, bad flags. No cluster; about 2 s.
fw_add_pytest(NAME cp_eval_compare FILE ${CP}/cp_eval_compare.py LABELS integration TIMEOUT 60)
