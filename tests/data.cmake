# Data pipeline (agent/engine/data.c) and collectives (agent/engine/collective.c).
fw_add_test(NAME test_collective SOURCES unit/test_collective.c LIBS fw_engine LABELS unit
  TIMEOUT 30)
fw_add_test(NAME test_collective_ring SOURCES integration/test_collective_ring.c LIBS fw_engine
  LABELS integration TIMEOUT 120)
fw_add_test(NAME test_data_shard SOURCES unit/test_data_shard.c LIBS fw_engine LABELS unit
  TIMEOUT 60)
fw_add_test(NAME test_data SOURCES unit/test_data.c LIBS fw_engine LABELS unit TIMEOUT 120)
# fw_data_tokenize with the file fault points live: data.c, fw_file.c and fw_fault.c are compiled
# into the test with FW_FAULT_INJECTION=1 (the archive copies are then never pulled in).
fw_add_test(NAME test_data_fault
  SOURCES unit/test_data_fault.c ${PROJECT_SOURCE_DIR}/agent/engine/data.c
          ${PROJECT_SOURCE_DIR}/common/fw_file.c ${PROJECT_SOURCE_DIR}/common/fw_fault.c
  LIBS fw_engine LABELS fault TIMEOUT 120)
target_compile_definitions(test_data_fault PRIVATE FW_FAULT_INJECTION=1)
