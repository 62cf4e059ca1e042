"""Outcomes over finished runs: success at the switch and the end, the dip, regret, figures."""
