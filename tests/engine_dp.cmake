# Data-parallel hooks of the engine (gradient buckets, bucketed backward, ZeRO-1 optimizer
# sharding, sharded checkpoints) on the CPU backend, in one process.
fw_add_test(NAME test_engine_dp SOURCES unit/test_engine_dp.c LIBS fw_engine LABELS unit TIMEOUT 60)
