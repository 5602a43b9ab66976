"""How a run is trained and measured: the trainer (`trainer`), its measurement window and summary (`window`), the
loss diagnostics (`diagnostics`) and the `Reporter` interface it reports through (`reporting`). It never imports
the store: the store implements the reporter. This file imports nothing, so `core.training.reporting` stays free
of torch."""
