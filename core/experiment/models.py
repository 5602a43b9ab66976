"""The classifier, built from the config alone: [Linear -> (BatchNorm) -> activation] x N -> Linear(., 1).

`forward` returns the pre-sigmoid value z with shape (batch,) — never (batch, 1), the article's shape bug.
With `output_relu` z is ReLU(Linear(.)), the article's model; the loss then applies the sigmoid (bce) or
works on z directly (bce_with_logits). While `record` is on, the model keeps each ReLU's output so the
diagnostics can count dead units without hooks.
"""

from __future__ import annotations

import torch
from torch import nn

from core.experiment.config import ExperimentConfig


def make_activation(cfg: ExperimentConfig) -> nn.Module:
    if cfg.activation == "relu":
        return nn.ReLU()
    if cfg.activation == "elu":
        return nn.ELU(alpha=cfg.elu_alpha)
    if cfg.activation == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if cfg.activation == "tanh":
        return nn.Tanh()
    return nn.Identity()


class Classifier(nn.Module):
    def __init__(self, cfg: ExperimentConfig, n_features: int) -> None:
        super().__init__()
        self.hidden = nn.ModuleList()
        width = n_features
        for i, out in enumerate(cfg.hidden):
            block = nn.Sequential()
            block.add_module("fc", nn.Linear(width, out))
            if cfg.hidden_bias_init is not None:
                nn.init.constant_(block.fc.bias, cfg.hidden_bias_init)
            if cfg.batchnorm:
                block.add_module("bn", nn.BatchNorm1d(out, eps=cfg.bn_eps, momentum=cfg.bn_momentum))
            block.add_module("act", make_activation(cfg))
            self.hidden.append(block)
            width = out
        self.out = nn.Linear(width, 1)
        self.hidden_bias_init = cfg.hidden_bias_init
        self.output_relu = cfg.output_relu
        self.hidden_relu = cfg.activation == "relu" and bool(cfg.hidden)
        self.record = False
        self.relu_outputs: list[torch.Tensor] = []

    def redraw(self) -> None:
        """Draw every parameter again from the current random state, as the constructor did and in its order:
        the model is then equal to one built now. A population draws each member's initial weights this way, one
        model a parameter layout instead of one a member (building a module costs several times the draws)."""
        for block in self.hidden:
            block.fc.reset_parameters()
            if self.hidden_bias_init is not None:
                nn.init.constant_(block.fc.bias, self.hidden_bias_init)
            if hasattr(block, "bn"):
                block.bn.reset_parameters()
        self.out.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record:
            self.relu_outputs = []
        for block in self.hidden:
            x = block(x)
            if self.record and self.hidden_relu:
                self.relu_outputs.append(x)
        z = self.out(x).squeeze(-1)
        if self.output_relu:
            z = torch.relu(z)
        return z

    def layer_names(self) -> list[str]:
        """Names of the parametrised layers, as used in `grad_norm/<layer>` and the BatchNorm metrics."""
        return [name for name, _ in self.named_layers()]

    def named_layers(self) -> list[tuple[str, nn.Module]]:
        layers: list[tuple[str, nn.Module]] = []
        for i, block in enumerate(self.hidden):
            layers.append((f"fc{i}", block.fc))
            if hasattr(block, "bn"):
                layers.append((f"bn{i}", block.bn))
        layers.append(("out", self.out))
        return layers

    def mode_layers(self) -> list[nn.Module]:
        """The modules whose forward pass depends on train/eval mode; switching these is switching the model."""
        return [m for m in self.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))]

    def batchnorms(self) -> list[tuple[str, nn.BatchNorm1d]]:
        return [(n, m) for n, m in self.named_layers() if isinstance(m, nn.BatchNorm1d)]


def build_model(cfg: ExperimentConfig, n_features: int) -> Classifier:
    return Classifier(cfg, n_features)
