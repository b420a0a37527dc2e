# bench_proto: encode+decode rates of a typical TASK_ASSIGN and of a 1 MiB
# lz4-compressed chunk of real JSONL text, and the compression ratio.
add_executable(bench_proto bench_proto.c)
target_link_libraries(bench_proto PRIVATE fw_proto)
# The corpus fallback when FW_SHARED_DIR is unset: ../shared beside the sources.
target_compile_definitions(bench_proto PRIVATE FW_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
set_target_properties(bench_proto PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
