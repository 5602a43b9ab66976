"""What is trained: the experiment config (one frozen dataclass, its presets and command-line flags), the data
sets, the model built from the config and the two BCE losses. numpy and torch only; nothing here knows about
training loops, storage or pages."""
