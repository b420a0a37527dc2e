# GPU benchmarks (CUDA backend): training tokens/s and MFU, generation tokens/s,
# embedding sequences/s, for GPT-2 124M. Without a GPU each prints why on stderr
# and exits 0 with no figures, so scripts/bench still runs on CPU machines.
# PyTorch and Hugging Face references for the same figures: bench/pytorch/.
if(WITH_CUDA AND TARGET fw_engine_cuda)
  foreach(b bench_gpu_train bench_gpu_generate bench_gpu_embed)
    add_executable(${b} ${b}.c)
    target_link_libraries(${b} PRIVATE fw_engine)
    set_target_properties(${b} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
  endforeach()
endif()
