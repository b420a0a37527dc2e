# bench_etcd: the etcd client against a real single-member etcd (started by
# tests/lib/etcd_harness): sequential put/range rates and latencies, and state
# changes per second batched in txns of 128 puts.
add_executable(bench_etcd bench_etcd.c)
target_link_libraries(bench_etcd PRIVATE fw_etcd_harness fw_common)
set_target_properties(bench_etcd PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
