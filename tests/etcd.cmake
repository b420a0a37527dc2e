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
# Election: queue order, wake-one, epochs, fencing, lease expiry, keepalive.
fw_add_test(NAME test_etcd_election SOURCES integration/test_etcd_election.c LIBS fw_etcd_harness
  LABELS integration TIMEOUT 60)
# Authentication against an etcd with auth enabled: tokens, renewal, EAUTH/EPERM.
fw_add_test(NAME test_etcd_auth SOURCES integration/test_etcd_auth.c LIBS fw_etcd_harness
  LABELS integration TIMEOUT 60)
# Fault loop: fail the N-th etcd request of a leader's life and of list+watch.
# The client and fw_fault.c are compiled in with FW_FAULT_INJECTION=1 so the
# loop runs in every build (objects given as sources win over libfw_common.a).
fw_add_test(NAME test_etcd_fault
  SOURCES integration/test_etcd_fault.c ${PROJECT_SOURCE_DIR}/common/fw_etcd.c
          ${PROJECT_SOURCE_DIR}/common/fw_etcd_lease.c ${PROJECT_SOURCE_DIR}/common/fw_etcd_watch.c
          ${PROJECT_SOURCE_DIR}/common/fw_fault.c
  LIBS fw_etcd_harness PkgConfig::CURL PkgConfig::JANSSON PkgConfig::CRYPTO
  LABELS integration fault TIMEOUT 60)
target_compile_definitions(test_etcd_fault PRIVATE FW_FAULT_INJECTION=1)
