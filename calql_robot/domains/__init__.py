"""Domains: one module per domain (env factory, dataset, presets); see STYLE.md "Target layout"."""
