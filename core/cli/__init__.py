"""`python -m core`: the command line on top of every layer. `main` parses and dispatches; `train`, `runs`,
`study` and `export` hold the commands; `output` writes JSON with NaN and Inf as data."""
