# Fine-tune, embed and eval jobs end to end (issue 6): one live cluster (1 coordinator,
# 3 agents of 1 CPU), a tiny GPT-2 made by flywheel-engine, datasets of Moby-Dick lines.
# 2-rank fine-tune with lineage and curve; resume after SIGKILL of the agent running rank 1
# (the second attempt continues at the checkpoint's step + 1); eval of 2 models x 2 shards
# equal to a local engine eval; embed of 2 shards equal to a local engine embed; promote
# decisions recorded (and the champion moved only when promoted); bad inputs refused at
# submit with nothing created; a corrupted dataset blob failing with its digest named.
# See tests/integration/cp_ml.py. Uses tests/controlplane.cmake's fw_add_pytest.
fw_add_pytest(NAME cp_ml FILE ${CMAKE_CURRENT_SOURCE_DIR}/integration/cp_ml.py
  LABELS integration TIMEOUT 300)
