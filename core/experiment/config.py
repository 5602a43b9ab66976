"""The experiment config: one frozen dataclass, the single source of truth for a run.

Every field has a default and a one-line comment. `validate()` raises a `ConfigError` (a `ValueError`) naming
the field and what is allowed, so the command line, the dashboard form and the study grid all report bad input
the same way. Runs store `to_dict()` as JSON; `from_dict()` reads it back and refuses unknown fields.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

DATASETS = ("gaussian", "moons", "circles", "xor", "random", "breast_cancer", "csv")
ACTIVATIONS = ("relu", "elu", "leaky_relu", "tanh", "identity")
LOSSES = ("bce", "bce_with_logits")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float64", "bfloat16", "float16")
DIAGNOSTICS = ("full", "loss")

# Fields grouped as the dashboard form and `--help` show them.
GROUPS: dict[str, tuple[str, ...]] = {
    "Data": ("dataset", "n_samples", "n_features", "noise", "pos_fraction", "val_fraction", "standardize",
             "feature_scale", "data_seed", "csv_path", "csv_label"),
    "Architecture": ("hidden", "batchnorm", "bn_eps", "bn_momentum", "activation", "elu_alpha", "output_relu",
                     "hidden_bias_init"),
    "Loss": ("loss", "clamp_eps", "pos_weight"),
    "Optimisation": ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "grad_clip"),
    "Run": ("seed", "device", "dtype", "diagnostics", "log_every"),
}


class ConfigError(ValueError):
    """A config value is not allowed. `field` names it; the message says what is allowed."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class ExperimentConfig:
    # --- data ---
    dataset: str = "gaussian"  # one of DATASETS; "random" has nothing to learn (the article's data)
    n_samples: int = 1000  # samples before the train/validation split (ignored for breast_cancer and csv)
    n_features: int = 10  # input width for gaussian and random; moons, circles and xor have 2
    noise: float = 0.05  # gaussian: share of flipped labels; moons/circles/xor: input jitter
    pos_fraction: float = 0.5  # share of positive samples (class imbalance), for generated data
    val_fraction: float = 0.2  # share held out for validation
    standardize: bool = True  # scale features to zero mean, unit variance (fitted on the training split)
    feature_scale: float = 1.0  # generated data: multiply every feature by this (raw units, as unscaled data has)
    data_seed: int = 0  # seed of data generation and of the split
    csv_path: str = ""  # dataset "csv": path of a file with a header row, numeric columns only
    csv_label: str = "label"  # dataset "csv": the label column, with exactly two distinct values
    # --- architecture ---
    hidden: tuple[int, ...] = (32,)  # hidden layer widths; () is logistic regression, like the article's Linear(10, 1)
    batchnorm: bool = False  # BatchNorm1d after each hidden Linear, before the activation
    bn_eps: float = 1e-5  # BatchNorm eps, added to the variance before the square root
    bn_momentum: float = 0.1  # BatchNorm running-statistics momentum
    activation: str = "relu"  # hidden activation, one of ACTIVATIONS
    elu_alpha: float = 1.0  # ELU's alpha (negative saturation value)
    output_relu: bool = False  # the article's bug: a ReLU on the output, before the sigmoid
    hidden_bias_init: float | None = None  # start every hidden bias at this value; None keeps PyTorch's default
    # --- loss ---
    loss: str = "bce"  # "bce": sigmoid then nn.BCELoss (logs clamped at -100); "bce_with_logits": exact
    clamp_eps: float | None = None  # bce only: clamp the probability to [eps, 1 - eps] before BCELoss
    pos_weight: float = 1.0  # weight of positive samples in the loss, for both losses
    # --- optimisation ---
    optimizer: str = "adam"  # one of OPTIMIZERS
    lr: float = 0.01  # learning rate
    momentum: float = 0.0  # sgd momentum
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    batch_size: int = 32  # samples per optimizer step
    epochs: int = 20  # passes over the training split
    grad_clip: float | None = None  # clip the total gradient norm to this value; None is off
    # --- run ---
    seed: int = 0  # seed of weight init and batch order
    device: str = "auto"  # one of DEVICES; auto picks cuda, then mps, then cpu
    dtype: str = "float32"  # compute dtype, one of DTYPES; sigmoid saturates at different logits in each
    diagnostics: str = "full"  # "full": every per-step diagnostic; "loss": train_loss only (fastest)
    log_every: int = 1  # log per-step metrics every N optimizer steps

    def __post_init__(self) -> None:
        # Lists from JSON or a form become a tuple, so the config stays hashable and frozen.
        if isinstance(self.hidden, list):
            object.__setattr__(self, "hidden", tuple(self.hidden))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        # every field is a scalar but `hidden`: read as they are (`dataclasses.asdict` deep-copies each, 40x slower)
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExperimentConfig":
        """Build and validate a config from a mapping; unknown keys are refused."""
        unknown = sorted(set(data) - set(field_names()))
        if unknown:
            raise ConfigError(unknown[0], f"unknown config field; allowed fields: {', '.join(field_names())}")
        cfg = cls(**{k: coerce(k, v) for k, v in data.items()})
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "ExperimentConfig":
        """A copy with `changes` coerced and applied, validated."""
        return ExperimentConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ validation
    def validate(self) -> "ExperimentConfig":
        _choice("dataset", self.dataset, DATASETS)
        _int_range("n_samples", self.n_samples, 10, 10_000_000)
        _int_range("n_features", self.n_features, 1, 100_000)
        _float_range("noise", self.noise, 0.0, 0.5 if self.dataset in ("gaussian", "random") else 10.0)
        _open_range("pos_fraction", self.pos_fraction, 0.0, 1.0)
        _open_range("val_fraction", self.val_fraction, 0.0, 1.0)
        _bool("standardize", self.standardize)
        _open_range("feature_scale", self.feature_scale, 0.0, 1e6)
        if self.feature_scale != 1.0 and self.dataset in ("breast_cancer", "csv"):
            raise ConfigError("feature_scale", f"only applies to generated data, not to dataset {self.dataset!r}; "
                                               "leave it at 1")
        _int_range("data_seed", self.data_seed, 0, 2**32 - 1)
        if self.dataset == "csv" and not str(self.csv_path).strip():
            raise ConfigError("csv_path", "dataset 'csv' needs the path of a CSV file")
        if self.dataset == "csv" and not str(self.csv_label).strip():
            raise ConfigError("csv_label", "dataset 'csv' needs the name of the label column")

        if not isinstance(self.hidden, tuple) or not all(_is_int(w) for w in self.hidden):
            raise ConfigError("hidden", "must be a list of positive integer widths, e.g. [64, 64] or [] for none")
        if len(self.hidden) > 16 or any(w < 1 or w > 65_536 for w in self.hidden):
            raise ConfigError("hidden", "allowed: at most 16 layers, each of width 1 to 65536")
        _bool("batchnorm", self.batchnorm)
        _open_range("bn_eps", self.bn_eps, 0.0, 1.0)
        _float_range("bn_momentum", self.bn_momentum, 0.0, 1.0)
        _choice("activation", self.activation, ACTIVATIONS)
        _open_range("elu_alpha", self.elu_alpha, 0.0, 100.0)
        _bool("output_relu", self.output_relu)
        if self.hidden_bias_init is not None:
            _float_range("hidden_bias_init", self.hidden_bias_init, -100.0, 100.0)

        _choice("loss", self.loss, LOSSES)
        if self.clamp_eps is not None:
            _open_range("clamp_eps", self.clamp_eps, 0.0, 0.5)
            if self.loss != "bce":
                raise ConfigError("clamp_eps", "only applies to loss 'bce'; leave it empty for 'bce_with_logits'")
        _open_range("pos_weight", self.pos_weight, 0.0, 1e6)

        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _open_range("lr", self.lr, 0.0, 100.0)
        _float_range("momentum", self.momentum, 0.0, 0.9999)
        _float_range("weight_decay", self.weight_decay, 0.0, 10.0)
        _int_range("batch_size", self.batch_size, 1, 10_000_000)
        if self.batchnorm and self.hidden and self.batch_size < 2:
            raise ConfigError("batch_size",
                              "must be at least 2 with batchnorm (BatchNorm1d cannot train on one sample)")
        _int_range("epochs", self.epochs, 1, 100_000)
        if self.grad_clip is not None:
            _open_range("grad_clip", self.grad_clip, 0.0, 1e9)

        _int_range("seed", self.seed, 0, 2**32 - 1)
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("diagnostics", self.diagnostics, DIAGNOSTICS)
        _int_range("log_every", self.log_every, 1, 1_000_000)
        return self


# ---------------------------------------------------------------------- field helpers
def inert_fields(cfg: ExperimentConfig) -> dict[str, str]:
    """The fields that change nothing in `cfg`, each with why: a study that varies one of them only in such
    configs trains the same model again and again under different labels."""
    out: dict[str, str] = {}
    if not cfg.hidden:
        why = "acts on hidden layers, and hidden is []"
        out.update(dict.fromkeys(("batchnorm", "bn_eps", "bn_momentum", "activation", "elu_alpha",
                                  "hidden_bias_init"), why))
    if not cfg.batchnorm:
        out.setdefault("bn_eps", "applies only with batchnorm=true")
        out.setdefault("bn_momentum", "applies only with batchnorm=true")
    if cfg.activation != "elu":
        out.setdefault("elu_alpha", "applies only with activation elu")
    if cfg.optimizer != "sgd":
        out["momentum"] = f"applies only to optimizer sgd (Adam keeps its own moments), not {cfg.optimizer}"
    if cfg.dataset != "csv":
        out.update(dict.fromkeys(("csv_path", "csv_label"), f"applies only to dataset csv, not {cfg.dataset}"))
    return out


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ExperimentConfig))


def field_comment(name: str) -> str:
    """The one-line comment of a field, read from this module's source (used for help text)."""
    return _COMMENTS.get(name, "")


def field_kind(name: str) -> str:
    """'int', 'float', 'optional_float', 'bool', 'str', 'choice' or 'widths'."""
    return _KINDS[name]


def choices(name: str) -> tuple[str, ...]:
    return _CHOICES.get(name, ())


def coerce(name: str, value: Any) -> Any:
    """Turn a value from JSON, a form or the command line into the field's type, or raise ConfigError."""
    if name not in _KINDS:
        raise ConfigError(name, f"unknown config field; allowed fields: {', '.join(field_names())}")
    kind = _KINDS[name]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if kind in ("float", "optional_float"):
            if kind == "optional_float" and (value is None or str(value).strip().lower() in ("", "none", "null")):
                return None
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        if kind == "widths":
            if isinstance(value, str):
                text = value.strip().strip("[]()")
                parts = [p for p in text.replace(",", " ").split() if p]
                return tuple(int(p) for p in parts)
            if isinstance(value, (list, tuple)):
                if any(isinstance(w, bool) or (isinstance(w, float) and not w.is_integer()) for w in value):
                    raise ValueError
                return tuple(int(w) for w in value)
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{value!r} is not {_KIND_WORDS[kind]}") from None


_KIND_WORDS = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a finite number",
    "optional_float": "a finite number or empty",
    "widths": "a list of whole numbers such as [64, 64] or []",
    "str": "text",
    "choice": "text",
}
_CHOICES = {"dataset": DATASETS, "activation": ACTIVATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS,
            "device": DEVICES, "dtype": DTYPES, "diagnostics": DIAGNOSTICS}


def _kind_of(f: dataclasses.Field) -> str:
    if f.name in _CHOICES:
        return "choice"
    if f.name == "hidden":
        return "widths"
    return {"bool": "bool", "int": "int", "float": "float", "float | None": "optional_float",
            "str": "str"}[str(f.type)]


_KINDS = {f.name: _kind_of(f) for f in dataclasses.fields(ExperimentConfig)}


def _read_comments() -> dict[str, str]:
    import inspect

    out: dict[str, str] = {}
    for line in inspect.getsource(ExperimentConfig).splitlines():
        line = line.strip()
        if ":" in line and "#" in line and not line.startswith("#"):
            name = line.split(":", 1)[0].strip()
            if name in _KINDS:
                comment = line.split("#", 1)[1].strip()
                # "one of DATASETS" in the source reads "one of gaussian, moons, ..." in help texts
                out[name] = re.sub(r"\bone of ([A-Z]+)\b", lambda m: "one of " + ", ".join(globals()[m.group(1)])
                                   if isinstance(globals().get(m.group(1)), tuple) else m.group(0), comment)
    return out


_COMMENTS = _read_comments()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, "must be true or false")


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if not _is_int(value) or not lo <= value <= hi:
        raise ConfigError(name, f"must be a whole number from {lo} to {hi}, got {value!r}")


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _float_range(name: str, value: Any, lo: float, hi: float) -> None:
    if not _num(value) or not lo <= value <= hi:
        raise ConfigError(name, f"must be a number from {lo:g} to {hi:g} inclusive, got {value!r}")


def _open_range(name: str, value: Any, lo: float, hi: float) -> None:
    if not _num(value) or not lo < value < hi:
        raise ConfigError(name, f"must be a number greater than {lo:g} and less than {hi:g}, got {value!r}")


# ---------------------------------------------------------------------- presets
PRESETS: dict[str, ExperimentConfig] = {
    # The article's program, made runnable: Linear(10, 1) -> ReLU -> Sigmoid, BCELoss, SGD lr 0.01, batch 32,
    # standard-normal inputs with random labels. There is nothing to learn; every prediction is >= 0.5.
    "article-example": ExperimentConfig(
        dataset="random", n_samples=640, n_features=10, noise=0.0, standardize=False, hidden=(), output_relu=True,
        loss="bce", optimizer="sgd", lr=0.01, batch_size=32, epochs=20),
    # The same model on learnable data: the ReLU before the sigmoid floors every probability at 0.5.
    "article-relu-sigmoid": ExperimentConfig(
        dataset="gaussian", n_samples=1000, n_features=10, hidden=(), output_relu=True,
        loss="bce", optimizer="sgd", lr=0.01, batch_size=32, epochs=20),
    # The fix: no output ReLU, raw logits into BCEWithLogitsLoss.
    "article-fixed": ExperimentConfig(
        dataset="gaussian", n_samples=1000, n_features=10, hidden=(), output_relu=False,
        loss="bce_with_logits", optimizer="sgd", lr=0.01, batch_size=32, epochs=20),
    # A small MLP with BatchNorm and the exact loss: a sensible starting point.
    "mlp-bn-logits": ExperimentConfig(
        dataset="moons", n_samples=1000, noise=0.2, hidden=(64, 64), batchnorm=True, activation="relu",
        loss="bce_with_logits", optimizer="adam", lr=0.01, batch_size=64, epochs=30),
    # Sigmoid + BCELoss pushed into saturation: a large learning rate on separable data drives logits past
    # float32's sigmoid range, so wrong predictions hit the -100 clamp with zero gradient.
    "saturating-bce": ExperimentConfig(
        dataset="gaussian", n_samples=1000, n_features=10, noise=0.1, hidden=(64,), activation="relu",
        loss="bce", optimizer="sgd", lr=5.0, batch_size=32, epochs=20),
}


def preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise ConfigError("preset", f"{name!r} is not a preset; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def describe(cfg: ExperimentConfig) -> str:
    """A short default run name: what differs from plain defaults that matters most for the loss."""
    hidden = "x".join(map(str, cfg.hidden)) or "linear"
    parts = [cfg.dataset, hidden, "bn" if cfg.batchnorm else None, cfg.activation if cfg.hidden else None,
             "out-relu" if cfg.output_relu else None,
             cfg.loss + (f"(eps={cfg.clamp_eps:g})" if cfg.clamp_eps else ""), f"{cfg.optimizer}-{cfg.lr:g}",
             f"s{cfg.seed}"]
    return " ".join(p for p in parts if p)
