"""Files: checkpoints, the run dir and its resumable state, atomic writes, scoring records."""
