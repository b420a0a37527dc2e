# Engine benchmarks (CPU backend), one JSON line per figure:
# bench_engine_train: training tokens/s for gpt2-124m and small (batch 4 x 64) on 1 and 2
#   threads, achieved GFLOP/s and the fraction of cblas_sgemm's GFLOP/s at the same shapes.
# bench_engine_infer: embedding sentences/s and generation tokens/s at batch 1 for small and
#   gpt2-124m (random weights: speed does not depend on the values).
foreach(fw_bench bench_engine_train bench_engine_infer)
  add_executable(${fw_bench} ${fw_bench}.c)
  target_link_libraries(${fw_bench} PRIVATE fw_engine PkgConfig::OPENBLAS)
  set_target_properties(${fw_bench} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
endforeach()
