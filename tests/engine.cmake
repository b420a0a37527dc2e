# Engine core: model math, file formats, checkpoints, generation (CPU backend).
fw_add_test(NAME test_engine_math SOURCES unit/test_engine_math.c LIBS fw_engine
  LABELS unit TIMEOUT 120)
fw_add_test(NAME test_engine_io SOURCES unit/test_engine_io.c LIBS fw_engine
  LABELS unit TIMEOUT 120)
fw_add_test(NAME test_engine_ckpt SOURCES unit/test_engine_ckpt.c LIBS fw_engine
  LABELS unit TIMEOUT 120)
fw_add_test(NAME test_engine_infer SOURCES unit/test_engine_infer.c LIBS fw_engine
  LABELS unit TIMEOUT 120)
