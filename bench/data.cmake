# Collective benchmark: ring all-reduce between 2 processes over loopback.
add_executable(bench_collective bench_collective.c)
target_link_libraries(bench_collective PRIVATE fw_engine)
set_target_properties(bench_collective PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
