# Eval result merging and paired comparison (common/fw_evalstats.c).
fw_add_test(NAME test_evalstats SOURCES unit/test_evalstats.c LIBS PkgConfig::JANSSON
  LABELS unit TIMEOUT 60)
