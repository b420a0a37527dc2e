fw_add_test(NAME test_err_log SOURCES unit/test_err_log.c LABELS unit)
fw_add_test(NAME test_utf8 SOURCES unit/test_utf8.c LABELS unit)
fw_add_test(NAME test_embedfile SOURCES unit/test_embedfile.c LABELS unit)
