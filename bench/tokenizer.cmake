# bench_tokenizer: GPT-2 encode/decode MB/s on the State of the Union corpus
# (one thread), vocabulary load time, BPE training time on Moby-Dick.
add_executable(bench_tokenizer bench_tokenizer.c)
target_link_libraries(bench_tokenizer PRIVATE fw_engine)
# The fixture fallback when neither FW_SHARED_DIR nor FW_SOURCE_DIR is set.
target_compile_definitions(bench_tokenizer PRIVATE FW_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
set_target_properties(bench_tokenizer PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
