# The ML executors (agent/agent_ml.c): finetune, embed and eval tasks driven
# through agent_runner with the real flywheel-engine (argv[1]) and a real
# directory store: results, progress and checkpoints, resume, shard merges,
# corrupt blobs, bad specs, a missing agent.store_dir. About 15 s on 2 cores.
fw_add_test(NAME test_agent_ml SOURCES integration/test_agent_ml.c
  LIBS fw_agent fw_test_engine_util fw_common PkgConfig::CZMQ PkgConfig::JANSSON
  LABELS integration TIMEOUT 120 ARGS $<TARGET_FILE:flywheel-engine>)
add_dependencies(test_agent_ml flywheel-engine)
