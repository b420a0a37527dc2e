# bench_dispatch: the control plane end to end - noop dispatch rate with every
# transition committed to etcd, submit-to-start latency p50/p99, and failover
# time (SIGKILL of the leader -> first task run by the new leader). Spawns a
# real etcd (tests/lib/etcd_harness), two coordinators and two agents.
add_executable(bench_dispatch bench_dispatch.c)
target_link_libraries(bench_dispatch PRIVATE fw_etcd_harness fw_testlib fw_proto fw_common
  PkgConfig::CZMQ PkgConfig::ZMQ PkgConfig::JANSSON PkgConfig::CURL)
target_compile_definitions(bench_dispatch PRIVATE
  FW_COORD_BIN="$<TARGET_FILE:flywheel-coordinator>"
  FW_AGENT_BIN="$<TARGET_FILE:flywheel-agent>")
add_dependencies(bench_dispatch flywheel-coordinator flywheel-agent)
set_target_properties(bench_dispatch PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
