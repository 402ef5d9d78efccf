"""Benchmarks of the EVCharging Network against the real broker and real EV_Central processes.

Run on demand (`make bench`, `python -m bench`), never as part of `make test`. Each benchmark
writes its figures to `docs/bench/<name>.json`; `bench.report` turns them into
`docs/performance.md` and `docs/bench/scaling.png`. See `python -m bench --help`.
"""
