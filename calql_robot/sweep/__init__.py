"""The sweep runner's room: a grid of ordinary runs (algorithms x tasks x seeds), run to
completion on Ray and resumed when killed. `grid.py` and `record.py` import no Ray; only
`runner.py` does, so the rest of the project imports without it."""
