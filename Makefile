# Entry points that are more than one cargo command.

.PHONY: bench

# The benchmark suite: Switchyard against the raw bus and against Celery (see README, Performance).
bench:
	loadtest/bench.sh
