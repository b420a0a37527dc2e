# flywheel-engine end to end: tests that drive the real binary (its path is
# argv[1]) and check the results with the library. Threads are pinned to 1
# inside the tests so the runs are deterministic and do not fight ctest -j.
add_library(fw_test_engine_util STATIC integration/test_engine_util.c)
target_link_libraries(fw_test_engine_util PUBLIC fw_testlib fw_engine PkgConfig::JANSSON)
target_include_directories(fw_test_engine_util PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/integration)

function(fw_engine_e2e_test NAME TIMEOUT)
  fw_add_test(NAME ${NAME} SOURCES integration/${NAME}.c
    LIBS fw_test_engine_util fw_engine PkgConfig::JANSSON
    LABELS integration TIMEOUT ${TIMEOUT} ARGS $<TARGET_FILE:flywheel-engine>)
  add_dependencies(${NAME} flywheel-engine)
endfunction()

# Help, usage errors, every bad input, and the small verbs: a few seconds.
fw_engine_e2e_test(test_engine_cli 60)
# Resume == uninterrupted (bitwise), --resume auto, save -> load == in-memory eval.
fw_engine_e2e_test(test_engine_resume 90)
# 2 ring ranks with batch B/2 == 1 rank with batch B.
fw_engine_e2e_test(test_engine_ring 90)
# A model overfit on facts: exact match, multiple choice, greedy/stop/max-tokens, embed.
fw_engine_e2e_test(test_engine_generate 120)
# Moby-Dick: a few hundred steps beat the unigram baseline on held-out chapters (~40 s).
fw_engine_e2e_test(test_engine_train 240)
