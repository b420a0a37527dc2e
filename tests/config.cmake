# Configuration, files, digests and fault injection (common/fw_config, fw_file,
# fw_digest, fw_fault, fw_common_opts) and the docs generator.

# fw_config_doc: writes the generated block of docs/configuration.md from the
# option tables. `fw_config_doc --update docs/configuration.md` after changing
# a table; test_config fails until that is done.
add_executable(fw_config_doc ${PROJECT_SOURCE_DIR}/common/tools/fw_config_doc.c)
# The coordinator's and the agent's tables live in their libraries.
target_link_libraries(fw_config_doc PRIVATE coord_core fw_agent fw_common)

# test_config carries the generator's functions (without its main) to compare
# the committed docs with freshly generated text.
fw_add_test(NAME test_config
  SOURCES unit/test_config.c ${PROJECT_SOURCE_DIR}/common/tools/fw_config_doc.c
  LIBS coord_core fw_agent LABELS unit TIMEOUT 30)
target_compile_definitions(test_config PRIVATE FW_CONFIG_DOC_NO_MAIN=1
  FW_CONFIG_SOURCE_DIR="${PROJECT_SOURCE_DIR}")

fw_add_test(NAME test_file SOURCES unit/test_file.c LABELS unit TIMEOUT 30)
fw_add_test(NAME test_digest SOURCES unit/test_digest.c LABELS unit TIMEOUT 30)

# The fault loops need the hooks compiled in whatever ENABLE_FAULT_INJECTION
# says, so the test builds its own copies of fw_fault.c and fw_file.c with
# FW_FAULT_INJECTION=1. Objects given as sources come before libfw_common.a on
# the link line, so the linker never pulls that archive's (hook-less) copies.
fw_add_test(NAME test_fault
  SOURCES unit/test_fault.c ${PROJECT_SOURCE_DIR}/common/fw_fault.c
          ${PROJECT_SOURCE_DIR}/common/fw_file.c
  LABELS unit fault TIMEOUT 30)
target_compile_definitions(test_fault PRIVATE FW_FAULT_INJECTION=1)
