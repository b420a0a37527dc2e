fw_add_test(NAME test_err_log SOURCES unit/test_err_log.c LABELS unit)
