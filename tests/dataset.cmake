# Dataset ingestion and splitting (common/fw_dataset.c).
fw_add_test(NAME test_dataset SOURCES unit/test_dataset.c LIBS PkgConfig::JANSSON LABELS unit
  TIMEOUT 60)
