/* placeholder: replaced by the module's real source. */
int pw_placeholder_scheduler_store(void);
int pw_placeholder_scheduler_store(void) { return 0; }
