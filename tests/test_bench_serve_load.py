"""bench/serve_load.py: how the batching gain is read off interleaved rounds (not the load itself,
which tests/test_serving.py and the benchmark run)."""

from __future__ import annotations


def test_batching_gain_pairs_the_modes_of_each_round(bench):
    runs = [{"batching": "on", "round": 0, "concurrency": 32, "rps": 130.0},
            {"batching": "off", "round": 0, "concurrency": 32, "rps": 100.0},
            {"batching": "on", "round": 1, "concurrency": 32, "rps": 120.0},
            {"batching": "off", "round": 1, "concurrency": 32, "rps": 80.0},
            {"batching": "on", "round": 2, "concurrency": 32, "rps": 110.0},
            {"batching": "off", "round": 2, "concurrency": 32, "rps": 100.0},
            {"batching": "on", "round": 0, "concurrency": 1, "rps": 90.0},  # no "off" at c=1: no ratio
            {"batching": "on", "round": 3, "concurrency": 32, "rps": 500.0}]  # an unpaired round is left out
    gain = bench("serve_load").batching_gain(runs)
    assert gain == {32: {"by_round": [1.3, 1.5, 1.1], "median": 1.3}}
