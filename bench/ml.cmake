# bench_cluster_ml: fine-tune tokens/s through the cluster (1 rank) against flywheel-engine
# train alone with identical settings, and embed sentences/s with 2 agents x 1 shard against
# one engine process (issue 6). A Python script (the control-plane tests' harness, so the
# python3 found by tests/controlplane.cmake), configured into build/bench with this build's
# paths; scripts/bench runs it like the C benchmarks.
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/bench_cluster_ml ${PROJECT_BINARY_DIR}/bench/bench_cluster_ml
  @ONLY FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
  WORLD_READ WORLD_EXECUTE)
