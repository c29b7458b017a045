/* placeholder: replaced by the module's real source. */
int pw_placeholder_predictor_placeholder(void);
int pw_placeholder_predictor_placeholder(void) { return 0; }
