"""Ship: the replayer, the pure planner, retries, and one package per backend."""
