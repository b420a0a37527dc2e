/* placeholder until the engine lands. */
int fw_engine_placeholder_(void);
int fw_engine_placeholder_(void) { return 0; }
