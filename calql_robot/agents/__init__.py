"""Agents: one module per method (its config, presets and pure losses; its learner beside
it), all under one contract, `agents/base.py`; `agents/catalog.py` is the table of `--algo` names."""
