# Lineage (issue 6): `flywheelctl lineage show` against a live local cluster (1 coordinator,
# 1 agent): exact node and edge sets for a model's ancestors, a dataset's descendants (no
# siblings), depth limiting, digests and job ids as refs, unknown/malformed refs, the text
# tree and the Graphviz output. fw_add_pytest comes from controlplane.cmake (included first:
# the parts are included in sorted order). About 15 s.
fw_add_pytest(NAME cp_lineage FILE ${CMAKE_CURRENT_SOURCE_DIR}/integration/cp_lineage.py
  LABELS integration TIMEOUT 90)
