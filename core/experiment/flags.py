"""The config on the command line: one flag per config field, and the layers a config is built from.

Shared by `train` and `study` (core.cli): defaults, then `--preset`, then `--config FILE`, then flags.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.experiment.config import (GROUPS, ConfigError, ExperimentConfig, choices, coerce, field_comment, field_kind,
                                    field_names, preset)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, `--n-samples` and `--n_samples` alike; values are parsed by the config."""
    for group, names in GROUPS.items():
        g = parser.add_argument_group(f"{group} (config fields)")
        for name in names:
            kind = field_kind(name)
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            help_text = field_comment(name)
            if choices(name) and "one of " not in help_text:  # listed once
                help_text += f" [{'|'.join(choices(name))}]"
            extra: dict[str, Any] = {"nargs": "?", "const": "true"} if kind == "bool" else {}
            g.add_argument(*flags, dest=f"cfg_{name}", default=None, metavar="V", help=help_text, **extra)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Preset, then --config file, then flags: each layer overrides the one before; validated at the end."""
    data = (preset(args.preset) if args.preset else ExperimentConfig()).to_dict()
    if args.config:
        path = Path(args.config)
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("config", f"no such file: {str(path)!r}") from None
        except IsADirectoryError:
            raise ConfigError("config", f"{str(path)!r} is a folder; give a JSON file") from None
        except OSError as exc:  # unreadable: permissions, a device
            raise ConfigError("config", f"cannot read {str(path)!r} ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("config", f"{path.name} is not valid JSON ({exc})") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("config"), dict):
            loaded = loaded["config"]  # a whole `show --json` object works too
        if not isinstance(loaded, dict):
            raise ConfigError("config", f"{path.name} must hold a JSON object of config fields")
        data.update(loaded)
    for name in field_names():
        value = getattr(args, f"cfg_{name}")
        if value is not None:
            data[name] = coerce(name, value)
    return ExperimentConfig.from_dict(data)
