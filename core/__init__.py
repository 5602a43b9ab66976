"""Lossboard's core, in layers; each imports only the layers below it (pyproject.toml states it as an
import-linter contract, and the test suite checks it):

    cli/           python -m core: the commands, on top of everything
    presentation/  how it is shown: charts, the pages' tables, forms and URLs, export, the HTML report
    jobs/          how jobs run: background training for the dashboard, study grids and their scheduler
    store/         where runs are kept: SQLAlchemy store, chunked metric series, records, migrations
    analysis/      pure computations on series and summaries: smoothing, reduction, bands, effects, findings
    training/      how a run is trained and measured: the trainer, its diagnostics, the reporter interface
    experiment/    what is trained: the config and its presets, data, models, losses

`pages/` (the Streamlit pages) sit above all of it and never import torch.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
