"""What runs leave, read without pytest: outcomes told apart (outcome), results files merged
(merge) and compared with a baseline (baseline), shards planned (shard), JUnit and HTML written
(junit, html), and `tbctl repro`, which runs `tbctl run` many times and reads what each left.
Imports config and the base; the engine and cli import it."""
