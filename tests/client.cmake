# The LLMOps client side (issue 6): the Python client's datasets / finetune / eval / embed /
# models APIs and flywheelctl's eval compare by refs, model promote, job show and artifact
# get, on a live cluster (1 coordinator, 2 agents, tiny models; ~60 s on 2 cores).
# fw_add_pytest comes from controlplane.cmake, which sorts after this file: the call is
# deferred to the end of the directory so the function exists by then.
cmake_language(DEFER CALL fw_add_pytest NAME cp_ml_client
  FILE ${CMAKE_CURRENT_SOURCE_DIR}/integration/cp_ml_client.py LABELS integration TIMEOUT 120)
