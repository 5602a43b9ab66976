"""How jobs run: training in background processes for the dashboard (`runner`), study grids (`spec`), studies in
the store (`studies`), their local scheduler and workers (`scheduler`), and device checks that keep torch out of
the dashboard's process (`devices`)."""
