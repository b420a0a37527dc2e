# GPU tests (label gpu): the CUDA backend against the CPU reference, NCCL.
# They need an NVIDIA GPU, fail loudly without one, and are excluded from CI
# and scripts/test (ctest -LE gpu). Built whenever the CUDA backend is, so CI
# still compiles and links them. Run on a GPU machine with
#   ctest --test-dir build-cuda -L gpu --output-on-failure
if(WITH_CUDA AND TARGET fw_engine_cuda)
  # Every kernel against its cpu_kernels.c twin, FP32 and BF16, outputs NaN-poisoned.
  fw_add_test(NAME test_cuda_ops SOURCES gpu/test_cuda_ops.c LIBS fw_engine
    LABELS gpu TIMEOUT 300)
  # The model API: forward/backward/AdamW/readers/embed/generation, CUDA vs CPU, errors.
  fw_add_test(NAME test_cuda_model SOURCES gpu/test_cuda_model.c LIBS fw_engine CUDA::cudart
    LABELS gpu TIMEOUT 600)
  # 100 training steps CPU vs CUDA; checkpoint resume == uninterrupted on CUDA.
  fw_add_test(NAME test_cuda_train SOURCES gpu/test_cuda_train.c LIBS fw_engine
    LABELS gpu TIMEOUT 900)
  if(WITH_NCCL)
    # NCCL all-reduce / broadcast: world 1, and 2 processes (on 2 GPUs, or one if NCCL allows).
    fw_add_test(NAME test_cuda_nccl SOURCES gpu/test_cuda_nccl.c LIBS fw_engine CUDA::cudart
      LABELS gpu TIMEOUT 300)
  endif()
endif()
