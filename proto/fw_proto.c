/* fw_proto.c - placeholder; the protocol lands with the foundation issue. */
int fw_proto_placeholder_(void);
int fw_proto_placeholder_(void) { return 0; }
