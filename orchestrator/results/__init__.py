"""What runs leave, read without pytest: outcomes told apart (outcome), results files merged
(merge) and compared with a baseline (baseline), shards planned (shard), JUnit and HTML written
(junit, html), a run's tests as the summary prints them (lines), `tbctl repro`, which runs
`tbctl run` many times and reads what each left, and `tbctl bisect` over such runs (bisect, its
rule in bisect_rule, its rounds over CI machines in bisect_fanout).
Imports config and the base; the engine and cli import it."""
