"""A catalogue of seeded failures: small configs that break a classifier's loss in one known way each, with the
root cause a finding must name and the config change that removes it, and healthy configs that must raise no
problem.

`python benchmarks/diagnosis.py` trains every entry and measures how often the top problem-or-warning finding
names the known cause, how many problems the healthy configs raise, and how often the counterfactual study
confirms the proposed fix. Entries are small (a few hundred samples, a few hundred steps) so that the whole
catalogue, with three seeds per side for each fix, trains in minutes on two cores.

Cause strings are the ones findings use (`core.analysis.causes`); the catalogue only names them, so that this
layer stays below the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class Entry:
    name: str  # short, unique
    config: ExperimentConfig
    cause: str = ""  # the root cause a finding must name; "" for a healthy config
    fix: dict[str, Any] = field(default_factory=dict)  # the config change that removes the cause
    note: str = ""  # what goes wrong, in a few words

    @property
    def healthy(self) -> bool:
        return not self.cause


def _c(**changes: Any) -> ExperimentConfig:
    """A small config: 500 samples, 15 epochs of batches of 32 (about 200 steps)."""
    base = dict(n_samples=500, epochs=15, batch_size=32)
    return ExperimentConfig(**{**base, **changes}).validate()


_RAW = dict(standardize=False)
_MLP = dict(hidden=(32, 32))

FAILURES: tuple[Entry, ...] = (
    # --- the article's bug: every probability >= 0.5
    Entry("relu-sigmoid-linear", _c(hidden=(), output_relu=True, optimizer="sgd", lr=0.05),
          "a ReLU before the sigmoid", {"output_relu": False}, "Linear -> ReLU -> Sigmoid on learnable data"),
    Entry("relu-sigmoid-mlp", _c(output_relu=True, lr=0.01), "a ReLU before the sigmoid", {"output_relu": False},
          "an MLP whose output goes through a ReLU"),
    Entry("relu-sigmoid-moons", _c(dataset="moons", noise=0.1, output_relu=True, loss="bce_with_logits",
                                   **_MLP), "a ReLU before the sigmoid", {"output_relu": False},
          "the ReLU before BCEWithLogitsLoss"),
    # --- unscaled inputs
    Entry("unscaled-breast-cancer", _c(dataset="breast_cancer", hidden=(64, 64), lr=0.05, epochs=10, **_RAW),
          "unscaled inputs", {"standardize": True}, "raw features up to ~4,000 into sigmoid + BCELoss"),
    Entry("unscaled-breast-cancer-sgd", _c(dataset="breast_cancer", optimizer="sgd", lr=0.01, epochs=10, **_RAW),
          "unscaled inputs", {"standardize": True}, "the same with SGD"),
    Entry("unscaled-gaussian-x1000", _c(feature_scale=1000.0, lr=0.01, **_RAW), "unscaled inputs",
          {"standardize": True}, "features in thousands"),
    Entry("unscaled-moons-x300-logits", _c(dataset="moons", noise=0.1, feature_scale=300.0,
                                           loss="bce_with_logits", **_MLP, **_RAW),
          "unscaled inputs", {"standardize": True}, "features in hundreds, exact loss"),
    # --- learning rate too high: divergence and oscillation
    Entry("lr-high-diverge-sgd", _c(hidden=(64, 64), optimizer="sgd", lr=20.0, loss="bce_with_logits"),
          "learning rate too high", {"lr": 2.0}, "SGD at lr 20 blows up within ten steps"),
    Entry("lr-high-diverge-deep", _c(hidden=(64, 64, 64), optimizer="sgd", lr=10.0, loss="bce_with_logits"),
          "learning rate too high", {"lr": 1.0}, "a deeper MLP at lr 10"),
    Entry("lr-high-oscillate-adam", _c(hidden=(), lr=3.0, noise=0.2, loss="bce_with_logits"),
          "learning rate too high", {"lr": 0.3}, "Adam at lr 3 jumps around"),
    Entry("lr-high-oscillate-sgd", _c(dataset="circles", noise=0.05, optimizer="sgd", lr=10.0,
                                      loss="bce_with_logits", **_MLP),
          "learning rate too high", {"lr": 1.0}, "SGD at lr 10 on circles"),
    Entry("lr-high-adam-thrown", _c(hidden=(32,), lr=90.0, loss="bce_with_logits", epochs=5), "learning rate too high",
          {"lr": 9.0}, "Adam at lr 90: logits in the millions, a loss that only falls from there"),
    Entry("lr-high-oscillate-linear", _c(hidden=(), optimizer="sgd", lr=30.0, noise=0.2, loss="bce_with_logits"),
          "learning rate too high", {"lr": 3.0}, "logistic regression at lr 30 on noisy labels"),
    # --- learning rate too low: a plateau
    Entry("lr-low-sgd", _c(dataset="moons", noise=0.1, optimizer="sgd", lr=1e-4, **_MLP),
          "learning rate too low", {"lr": 0.01}, "SGD at lr 1e-4 barely moves"),
    Entry("lr-low-adam", _c(dataset="circles", noise=0.05, lr=1e-5, loss="bce_with_logits", **_MLP),
          "learning rate too low", {"lr": 0.001}, "Adam at lr 1e-5"),
    Entry("lr-low-linear", _c(hidden=(), optimizer="sgd", lr=1e-4), "learning rate too low", {"lr": 0.01},
          "logistic regression at lr 1e-4"),
    # --- half precision
    Entry("float16-adam-zero-eps", _c(dtype="float16", lr=0.05, noise=0.1, hidden=(64,), epochs=8),
          "Adam's denominator rounds to 0 in float16", {"dtype": "float32"},
          "Adam's eps (1e-8) is zero in float16: a step divides by zero"),
    Entry("float16-adamw-zero-eps-moons", _c(dataset="moons", noise=0.1, dtype="float16", optimizer="adamw",
                                             lr=0.01, **_MLP),
          "Adam's denominator rounds to 0 in float16", {"dtype": "float32"}, "the same with AdamW on moons"),
    Entry("float16-bceloss-gradient", _c(dtype="float16", optimizer="sgd", lr=0.3, noise=0.0, hidden=(32,)),
          "float16 overflow", {"dtype": "float32"},
          "sigmoid is exactly 1 above z = 8.3 in float16: BCELoss's backward divides by p(1 - p) = 0"),
    Entry("bfloat16-saturation", _c(dtype="bfloat16", optimizer="sgd", lr=1.0, pos_fraction=0.8, noise=0.02),
          "half-precision saturation", {"dtype": "float32"},
          "sigmoid is exactly 1 above z = 6.25 in bfloat16: negatives there cost 100 with no gradient"),
    Entry("bfloat16-updates-round-away", _c(dtype="bfloat16", optimizer="sgd", lr=1e-4, **_MLP),
          "updates below the dtype's precision", {"dtype": "float32"}, "lr x gradient under bfloat16's step"),
    Entry("float16-updates-round-away", _c(dtype="float16", optimizer="sgd", lr=2e-5, hidden=()),
          "updates below the dtype's precision", {"dtype": "float32"}, "lr x gradient under float16's step"),
    # --- clamping
    Entry("clamp-eps-large", _c(clamp_eps=0.2, lr=0.01), "clamp_eps too large", {"clamp_eps": None},
          "probabilities clamped to [0.2, 0.8]"),
    Entry("clamp-eps-large-linear", _c(hidden=(), clamp_eps=0.1, optimizer="sgd", lr=0.5), "clamp_eps too large",
          {"clamp_eps": None}, "probabilities clamped to [0.1, 0.9]"),
    Entry("bce-saturation-sgd", _c(noise=0.1, hidden=(64,), optimizer="sgd", lr=5.0),
          "sigmoid saturation under BCELoss's clamp", {"loss": "bce_with_logits"},
          "the saturating-bce preset, smaller"),
    Entry("bce-saturation-adam", _c(dataset="moons", noise=0.25, lr=0.5, **_MLP),
          "sigmoid saturation under BCELoss's clamp", {"loss": "bce_with_logits"}, "Adam pushes logits past 16.6"),
    # --- collapse to one class
    Entry("weight-decay-collapse", _c(pos_fraction=0.2, optimizer="sgd", weight_decay=5.0, lr=0.1, **_MLP),
          "weight decay too strong", {"weight_decay": 0.0}, "decay pulls every weight to zero: the prior only"),
    Entry("weight-decay-collapse-sgd", _c(dataset="moons", noise=0.1, pos_fraction=0.3, optimizer="sgd", lr=0.1,
                                          weight_decay=5.0, **_MLP),
          "weight decay too strong", {"weight_decay": 0.0}, "SGD's L2 at 5"),
    # --- dead ReLUs
    Entry("dead-relu-negative-bias", _c(hidden_bias_init=-3.0), "dead ReLUs", {"hidden_bias_init": None},
          "every hidden bias starts at -3: no unit ever fires"),
    Entry("dead-relu-negative-bias-moons", _c(dataset="moons", noise=0.1, hidden_bias_init=-2.0,
                                              loss="bce_with_logits", **_MLP),
          "dead ReLUs", {"hidden_bias_init": None}, "biases at -2 in two ReLU layers"),
    # --- BatchNorm
    Entry("batchnorm-tiny-batches", _c(dataset="moons", noise=0.1, batchnorm=True, batch_size=2, epochs=3,
                                       loss="bce_with_logits", **_MLP),
          "BatchNorm with tiny batches", {"batch_size": 32}, "batch statistics of 2 samples"),
    Entry("batchnorm-frozen-stats", _c(feature_scale=1.0, batchnorm=True, bn_momentum=0.0, lr=0.05,
                                       loss="bce_with_logits", **_MLP),
          "BatchNorm running statistics never updated", {"bn_momentum": 0.1},
          "bn_momentum 0: evaluation normalises with mean 0, variance 1"),
    Entry("batchnorm-momentum-one", _c(dataset="moons", noise=0.1, batchnorm=True, bn_momentum=1.0, batch_size=8,
                                       epochs=6, loss="bce_with_logits", **_MLP),
          "BatchNorm momentum too high", {"bn_momentum": 0.1}, "running statistics = the last batch of 4"),
    # --- nothing to learn, or learning the noise
    Entry("random-labels-mlp", _c(dataset="random", hidden=(128,), epochs=30, lr=0.01),
          "random labels", {"dataset": "gaussian"}, "labels independent of the inputs, memorised"),
    Entry("random-labels-linear", _c(dataset="random", hidden=(), optimizer="sgd", lr=0.1),
          "random labels", {"dataset": "gaussian"}, "the article's data without its ReLU"),
    Entry("overfit-label-noise", _c(n_samples=200, noise=0.3, hidden=(256, 256), epochs=60, lr=0.01,
                                    loss="bce_with_logits"),
          "overfitting", {"epochs": 5}, "30% flipped labels, a big MLP, 60 epochs"),
    Entry("overfit-small-data", _c(n_samples=120, n_features=40, noise=0.2, hidden=(256, 256), epochs=80,
                                   lr=0.005, loss="bce_with_logits"),
          "overfitting", {"epochs": 8}, "120 samples of 40 features, 80 epochs"),
    # --- depth and capacity
    Entry("vanishing-tanh-deep", _c(dataset="moons", noise=0.1, hidden=(32,) * 10, activation="tanh",
                                    optimizer="sgd", lr=0.01, loss="bce_with_logits"),
          "vanishing gradients", {"batchnorm": True}, "10 tanh layers: the first ones get almost no gradient"),
    Entry("vanishing-tanh-deeper", _c(dataset="moons", noise=0.1, hidden=(32,) * 12, activation="tanh",
                                      optimizer="sgd", lr=0.01, loss="bce_with_logits"),
          "vanishing gradients", {"batchnorm": True}, "12 tanh layers"),
    Entry("linear-model-xor", _c(dataset="xor", noise=0.05, hidden=(), loss="bce_with_logits"),
          "a linear model for non-linear data", {"hidden": [32]}, "logistic regression on XOR"),
    Entry("linear-model-circles", _c(dataset="circles", noise=0.05, hidden=(), loss="bce_with_logits"),
          "a linear model for non-linear data", {"hidden": [32]}, "logistic regression on circles"),
    Entry("majority-circles-linear", _c(dataset="circles", noise=0.05, hidden=(), pos_fraction=0.1,
                                        loss="bce_with_logits"),
          "predicting the majority class", {"hidden": [32]},
          "logistic regression on circles with 10% positives: 90% accuracy from predicting negative"),
    Entry("identity-activation-xor", _c(dataset="xor", noise=0.05, activation="identity", loss="bce_with_logits",
                                        **_MLP),
          "no non-linearity", {"activation": "relu"}, "hidden layers without an activation: still linear"),
    # --- the optimiser's settings
    Entry("too-few-steps", _c(dataset="moons", noise=0.1, batch_size=400, epochs=5, optimizer="sgd", lr=0.5,
                              loss="bce_with_logits", **_MLP),
          "too few optimizer steps", {"epochs": 50}, "5 full-batch steps: stopped while still falling"),
    Entry("grad-clip-tight", _c(dataset="moons", noise=0.1, grad_clip=1e-4, optimizer="sgd", lr=0.1,
                                loss="bce_with_logits", **_MLP),
          "gradient clipping too tight", {"grad_clip": None}, "every step clipped to norm 1e-4"),
    Entry("momentum-too-high", _c(optimizer="sgd", momentum=0.999, lr=0.5, noise=0.1, loss="bce_with_logits"),
          "momentum too high", {"momentum": 0.9}, "SGD momentum 0.999 overshoots for hundreds of steps"),
)

HEALTHY: tuple[Entry, ...] = (
    Entry("ok-article-fixed", _c(hidden=(), loss="bce_with_logits", optimizer="sgd", lr=0.05), note="the fix"),
    Entry("ok-mlp-bce", _c(lr=0.01), note="the defaults"),
    Entry("ok-mlp-logits", _c(loss="bce_with_logits", lr=0.01)),
    Entry("ok-moons-bn", _c(dataset="moons", noise=0.2, batchnorm=True, loss="bce_with_logits", **_MLP)),
    Entry("ok-circles-elu", _c(dataset="circles", noise=0.05, activation="elu", loss="bce_with_logits", **_MLP)),
    Entry("ok-xor-tanh", _c(dataset="xor", noise=0.05, activation="tanh", loss="bce_with_logits", **_MLP)),
    Entry("ok-breast-cancer", _c(dataset="breast_cancer", loss="bce_with_logits", lr=0.01)),
    Entry("ok-breast-cancer-bn-raw", _c(dataset="breast_cancer", batchnorm=True, loss="bce_with_logits", lr=0.01,
                                        **_RAW), note="raw features, BatchNorm rescales"),
    Entry("ok-imbalanced-logits", _c(pos_fraction=0.15, loss="bce_with_logits", lr=0.01)),
    Entry("ok-sgd-momentum", _c(dataset="moons", noise=0.1, optimizer="sgd", lr=0.1, momentum=0.9,
                                loss="bce_with_logits", **_MLP)),
    Entry("ok-adamw-decay", _c(optimizer="adamw", weight_decay=0.01, loss="bce_with_logits", lr=0.01)),
    Entry("ok-clamp-eps-small", _c(clamp_eps=1e-7, lr=0.01)),
    Entry("ok-leaky-deep", _c(dataset="moons", noise=0.1, hidden=(32, 32, 32), activation="leaky_relu",
                              loss="bce_with_logits")),
    Entry("ok-float64", _c(dtype="float64", loss="bce_with_logits", lr=0.01)),
)

CATALOGUE: tuple[Entry, ...] = FAILURES + HEALTHY


def entry(name: str) -> Entry:
    for e in CATALOGUE:
        if e.name == name:
            return e
    raise KeyError(f"{name!r} is not in the catalogue; entries: {', '.join(e.name for e in CATALOGUE)}")
