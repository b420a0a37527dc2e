# flywheel-coordinator (coordinator/): unit tests of its pure modules, linked
# against coord_core without a process or etcd.
#   test_coord_spec     job spec validation (field named in every error), tokens file
#   test_coord_state    task state machine, retries/backoff, cancel, scheduler:
#                       priority, labels, drain, gangs (all or nothing, retried
#                       whole), backfill around a waiting gang
#   test_coord_records  etcd keys and values: render -> parse round trips, bad
#                       records refused; metrics text checked by promtool
fw_add_test(NAME test_coord_spec SOURCES unit/test_coord_spec.c
  LIBS coord_core LABELS unit TIMEOUT 30)
fw_add_test(NAME test_coord_state SOURCES unit/test_coord_state.c
  LIBS coord_core LABELS unit TIMEOUT 30)
fw_add_test(NAME test_coord_records SOURCES unit/test_coord_records.c
  LIBS coord_core LABELS unit TIMEOUT 30)
