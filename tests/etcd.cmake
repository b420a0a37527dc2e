# etcd v3 client (common/fw_etcd*.c): the harness that runs real etcd members,
# an offline unit test, and integration tests against /usr/bin/etcd.

# fw_etcd_harness: start/kill/restart etcd members on free loopback ports.
add_library(fw_etcd_harness STATIC ${CMAKE_CURRENT_SOURCE_DIR}/lib/etcd_harness.c)
target_include_directories(fw_etcd_harness PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/lib)
target_link_libraries(fw_etcd_harness PUBLIC fw_testlib fw_common PRIVATE PkgConfig::CURL)

# No etcd needed: endpoint validation, limits, builder errors, failover timing.
fw_add_test(NAME test_etcd_offline SOURCES unit/test_etcd_offline.c LABELS unit TIMEOUT 30)

# Against a real single member: KV, paging, txn semantics, leases, compaction.
fw_add_test(NAME test_etcd_kv SOURCES integration/test_etcd_kv.c LIBS fw_etcd_harness
  LABELS integration TIMEOUT 60)
fw_add_test(NAME test_etcd_watch SOURCES integration/test_etcd_watch.c LIBS fw_etcd_harness
  LABELS integration TIMEOUT 60)
# A 3-member cluster with members SIGKILLed: failover, watch resume, compaction.
fw_add_test(NAME test_etcd_cluster SOURCES integration/test_etcd_cluster.c LIBS fw_etcd_harness
  LABELS integration TIMEOUT 90)
