# Artifact store (common/fw_store*.c): blobs, verification, trees, chunked
# uploads, the local cache. test_store forks two writers for the concurrent-put
# case, hence the integration label beside unit. About 1 s.
fw_add_test(NAME test_store SOURCES unit/test_store.c LABELS unit integration TIMEOUT 30)
