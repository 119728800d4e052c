"""Sweeps: many variants of one job spec, run as ordinary jobs and ranked together.

``spec`` (the SweepSpec and path overrides), ``expand`` (grid, random, list, repeats),
``prepare`` (validate and dry-build every run at submit), ``scheduler`` (max_concurrent slots
and the median stopping rule, stepped by the reaper), ``median`` (the rule, pure),
``leaderboard`` (ranking and aggregation over seeds), ``view`` (a sweep's stored state),
``diagnosis`` (the train-mode vs eval-mode gap against the swept parameter).
"""
