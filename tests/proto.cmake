# Wire protocol (proto/): codec, schema, lz4, rejections, ZeroMQ transport,
# random/mutated frames, the generated docs, and the fuzz target's corpus.
fw_add_test(NAME test_proto SOURCES unit/test_proto.c
  LIBS fw_proto PkgConfig::MSGPACK PkgConfig::LZ4 LABELS unit TIMEOUT 120)
fw_add_test(NAME test_proto_zmq SOURCES unit/test_proto_zmq.c
  LIBS fw_proto LABELS unit TIMEOUT 60)
# Hostile input: 20,000 random and mutated frames from a fixed seed.
fw_add_test(NAME test_proto_random SOURCES unit/test_proto_random.c
  LIBS fw_proto PkgConfig::MSGPACK LABELS unit fault TIMEOUT 120)

# docs/protocol.md's message reference must match proto/fw_messages.def.
add_test(NAME proto_doc COMMAND fw_proto_doc --check ${PROJECT_SOURCE_DIR}/docs/protocol.md)
set_tests_properties(proto_doc PROPERTIES LABELS unit TIMEOUT 30)

# Fuzzing. The seed corpus is generated from the table (one fixture for both
# tests below); the replay driver runs the fuzz target's code over it with
# gcc in every build, the fuzz test (FW_FUZZ=ON and clang) runs libFuzzer.
set(FW_PROTO_CORPUS ${PROJECT_BINARY_DIR}/fuzz/proto-seeds)
fw_add_test(NAME proto_fuzz_seeds SOURCES fuzz/fuzz_seeds.c LIBS fw_proto
  ARGS ${FW_PROTO_CORPUS} LABELS unit TIMEOUT 30)
set_tests_properties(proto_fuzz_seeds PROPERTIES FIXTURES_SETUP proto_corpus)
fw_add_test(NAME proto_fuzz_replay SOURCES fuzz/fuzz_replay.c fuzz/fuzz_proto.c LIBS fw_proto
  ARGS --min 70 ${FW_PROTO_CORPUS} ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus LABELS unit TIMEOUT 60)
set_tests_properties(proto_fuzz_replay PROPERTIES FIXTURES_REQUIRED proto_corpus)

if(FW_FUZZ)
  find_program(FW_CLANG NAMES clang clang-14)
  if(FW_CLANG)
    add_test(NAME proto_fuzz
      COMMAND ${CMAKE_COMMAND} -E env FW_FUZZ_CC=${FW_CLANG}
              bash ${PROJECT_SOURCE_DIR}/tests/fuzz/run_fuzz.sh ${PROJECT_SOURCE_DIR}
              ${PROJECT_BINARY_DIR} $<TARGET_FILE:proto_fuzz_seeds>)
    # FW_FUZZ_SECONDS (default 60) of fuzzing plus about a minute to compile.
    set_tests_properties(proto_fuzz PROPERTIES LABELS fuzz TIMEOUT 400)
  else()
    message(STATUS "FW_FUZZ: clang not found, proto_fuzz is not registered")
  endif()
endif()

# The codec under allocation failure: the proto sources (without the ZeroMQ
# transport) and fw_fault.c compiled into the test with FW_FAULT_INJECTION=1;
# the fw_proto archive is not linked, so no copy without the fault point sneaks in.
set(FW_PROTO_FAULT_SOURCES)
foreach(src fw_schema.c fw_val.c fw_proto.c fw_proto_encode.c fw_proto_decode.c fw_proto_example.c)
  list(APPEND FW_PROTO_FAULT_SOURCES ${PROJECT_SOURCE_DIR}/proto/${src})
endforeach()
fw_add_test(NAME test_proto_fault
  SOURCES unit/test_proto_fault.c ${FW_PROTO_FAULT_SOURCES} ${PROJECT_SOURCE_DIR}/common/fw_fault.c
  LIBS fw_common PkgConfig::MSGPACK PkgConfig::LZ4 LABELS unit fault TIMEOUT 120)
target_include_directories(test_proto_fault PRIVATE ${PROJECT_SOURCE_DIR}/proto)
target_compile_definitions(test_proto_fault PRIVATE FW_FAULT_INJECTION=1)
