"""A population's models as one: every member's parameters stacked in one (members, n) tensor, trained with
batched matrix products.

Each member starts from exactly the weights the single-run trainer gives its config: its parameters are drawn
under `torch.manual_seed(cfg.seed)`, as `trainer.train` builds its model, by one `Classifier` a parameter layout
drawn again for each member (`Classifier.redraw`), and copied into the member's row. A member's own model is built
when it is asked for (`single`): its layer layout names the member's diagnostics, and it is where a divergence is
traced (`trainer.where_nonfinite`).

Explicit batched layers (`baddbmm`), not `torch.func.vmap` over one module: members may differ in activation,
BatchNorm on or off and loss, which one vmapped module cannot express, and BatchNorm's running statistics are
updated in place, which vmap does not support without replacing the modules. Laid out as (batch, members x
width), BatchNorm is one `F.batch_norm` call whose channels are the members' units, each normalised on its own.
A layer's branches (BatchNorm or not with its eps and momentum, each activation) run on slices of adjacent members
that share them, which `stacking_order` gives a population: computing every branch for every member and selecting
by a mask made the `where`s alone about a third of a mixed population's training time.

The row of the flat tensor holds the parameters in the single model's order (`fc0.weight`, `fc0.bias`,
`bn0.weight`, `bn0.bias`, ..., `out.weight`, `out.bias`); BatchNorm slots exist when any member has BatchNorm,
and a member without it keeps them unused (`own` picks its own elements).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from core.experiment.config import ExperimentConfig
from core.experiment.models import Classifier, build_model, make_activation
from core.training.diagnostics import layer_spans


# A parameter here is a strided view of a member row, its gradient the same view of `grads`: autograd accumulates
# into it in place all the same, and says once that the layout is not the one it prefers.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


MAX_RUNS = 8  # runs of adjacent members sharing a branch (BatchNorm or not, an activation) taken as slices


def stacking_order(cfgs: list[ExperimentConfig]) -> list[int]:
    """An order of `cfgs` in which members sharing BatchNorm or not (with its eps and momentum) and an activation
    are adjacent, so that each layer runs each branch on slices of members, and within a branch those sharing an
    optimizer, which steps their rows at once (otherwise in the given order)."""
    return sorted(range(len(cfgs)), key=lambda k: (_norm(cfgs[k]) or (), cfgs[k].activation, cfgs[k].elu_alpha,
                                                   cfgs[k].optimizer))


def _norm(cfg: ExperimentConfig) -> tuple[float, float] | None:
    """A member's BatchNorm (eps, momentum), None without BatchNorm (or without a hidden layer to have it)."""
    return (cfg.bn_eps, cfg.bn_momentum) if cfg.batchnorm and cfg.hidden else None


def _split(x: torch.Tensor, runs: list[tuple]) -> tuple[torch.Tensor, ...]:
    """x's rows cut at the runs' bounds (runs of members, (start, stop, ...), covering them in order), by one
    `split`: its backward joins the parts' gradients in one pass, where a slice's backward fills a zero tensor of
    the whole input for each part and autograd adds them up (with four branches, those fills were 40% of a
    population's step)."""
    return x.split([b - a for a, b, *_ in runs]) if len(runs) > 1 else (x,)


def _runs(values: list) -> list[tuple[int, int, object]]:
    """The maximal runs of equal adjacent values, as (start, stop, value)."""
    out: list[tuple[int, int, object]] = []
    for k, v in enumerate(values):
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], k + 1, v)
        else:
            out.append((k, k + 1, v))
    return out


class StackedClassifier:
    """The members' classifiers as one model; `values` and `grads` are (members, n), every parameter a view."""

    def __init__(self, cfgs: list[ExperimentConfig], n_features: int, *, device: torch.device,
                 dtype: torch.dtype) -> None:
        base = cfgs[0]
        self.size = m = len(cfgs)
        self.hidden = tuple(base.hidden)
        self.out_relu = [c.output_relu for c in cfgs]  # each member's output ReLU
        self.output_relu = any(self.out_relu)
        # the members with an output ReLU, where some have none: (members, 1), else None
        self.out_mask = torch.tensor(self.out_relu, device=device).view(m, 1) if len(set(self.out_relu)) > 1 \
            else None
        norms = [_norm(c) for c in cfgs]  # each member's BatchNorm (eps, momentum), or None
        has_bn = [n is not None for n in norms]
        self.with_bn = any(has_bn)
        # (layer, parameter, shape) in the single model's parameter order
        slots: list[tuple[str, str, tuple[int, ...]]] = []
        width = n_features
        for i, w in enumerate(self.hidden):
            slots += [(f"fc{i}", "weight", (w, width)), (f"fc{i}", "bias", (w,))]
            if self.with_bn:
                slots += [(f"bn{i}", "weight", (w,)), (f"bn{i}", "bias", (w,))]
            width = w
        slots += [("out", "weight", (1, width)), ("out", "bias", (1,))]
        spans, at = [], 0
        for _, _, shape in slots:
            n = int(torch.Size(shape).numel())
            spans.append((at, at + n))
            at += n
        self.spans = spans  # each parameter's (start, stop) in a row
        # each layer's elements of a row, as `GradLayout.ranges` (a layer's parameters are adjacent: one span)
        self.layer_ranges = layer_spans((layer, a, b) for (layer, _, _), (a, b) in zip(slots, spans))
        self.values = torch.zeros(m, at, dtype=dtype, device=device)
        self.grads = torch.zeros_like(self.values)
        plain = torch.tensor([j for (layer, _, _), (a, b) in zip(slots, spans) if not layer.startswith("bn")
                              for j in range(a, b)], dtype=torch.long, device=device)
        # Each member's own elements of a row: None for every element (the common case), else an index.
        self.own: list[torch.Tensor | None] = [None if bn or not self.with_bn else plain for bn in has_bn]
        self.cfgs, self.n_features, self.device, self.dtype = cfgs, n_features, device, dtype
        self._singles: dict[int, Classifier] = {}
        drawn: dict[tuple, Classifier] = {}  # one model a parameter layout, its parameters drawn for each member
        for k, cfg in enumerate(cfgs):
            # the member's initial weights, as trainer.train's `torch.manual_seed` makes them: drawn on the host,
            # from the CPU generator alone (seeding every device's too costs ~0.7 ms a member)
            layout = (tuple(cfg.hidden), cfg.batchnorm, cfg.hidden_bias_init)
            if layout not in drawn:
                drawn[layout] = build_model(cfg, n_features)
            torch.default_generator.manual_seed(cfg.seed)
            model = drawn[layout]
            model.redraw()
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(device=device, dtype=dtype)
            if self.own[k] is None:
                self.values[k].copy_(flat)
            else:
                self.values[k, self.own[k]] = flat
        self.params: dict[str, torch.Tensor] = {}
        for (layer, name, shape), (a, b) in zip(slots, spans):
            p = torch.nn.Parameter(torch.empty(0, dtype=dtype, device=device))
            p.data = self.values[:, a:b].view(m, *shape)
            p.grad = self.grads[:, a:b].view(m, *shape)  # backward accumulates into `grads` in place
            self.params[f"{layer}.{name}"] = p
        self.running: list[tuple[torch.Tensor, torch.Tensor]] = [
            (torch.zeros(m * w, dtype=dtype, device=device), torch.ones(m * w, dtype=dtype, device=device))
            for w in (self.hidden if self.with_bn else ())]
        # Members that differ in BatchNorm (on or off, its eps, its momentum) or activation take their own branch of
        # a layer: on the slices of members that share it when they are adjacent (`stacking_order` makes them so),
        # else by a mask (`where`, several times slower: it computes every branch for every member and selects;
        # BatchNorm by a mask only where every member with it has the same eps and momentum).
        self.bn_runs = _runs(norms)  # (start, stop, (eps, momentum) or None)
        kinds: dict[tuple[str, float], int] = {}
        kind = [kinds.setdefault((cfg.activation, cfg.elu_alpha), len(kinds)) for cfg in cfgs]
        acts = [make_activation(cfgs[kind.index(j)]) for j in range(len(kinds))]
        self.act_runs = [(a, b, acts[j]) for a, b, j in _runs(kind)]
        # the runs of members sharing both: (start, stop, BatchNorm or not, activation)
        cuts = sorted({a for a, _, _ in self.bn_runs} | {a for a, _, _ in self.act_runs} | {m})
        self.branches = [(a, b, norms[a], acts[kind[a]]) for a, b in zip(cuts, cuts[1:])]
        settings = {n for n in norms if n is not None}
        self.bn_shared = next(iter(settings)) if len(settings) == 1 else None  # every BatchNorm member's setting
        self.bn_mask = None
        if len(self.bn_runs) > MAX_RUNS and self.bn_shared is not None:
            self.bn_mask = torch.tensor(has_bn, device=device).view(m, 1, 1)
        self.activations = None
        if len(self.act_runs) > MAX_RUNS:
            self.activations = [(act, torch.tensor([kind[k] == j for k in range(m)], device=device).view(m, 1, 1))
                                for j, act in enumerate(acts)]
        self.relu = [cfg.activation == "relu" and bool(self.hidden) for cfg in cfgs]

    def forward(self, x: torch.Tensor, *, training: bool = True, record: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: (members, batch, features) -> z: (members, batch) and, with `record`, each hidden layer's
        activation output (members, batch, width) (a ReLU member's row is its ReLU output)."""
        p = self.params
        outputs = []
        for i in range(len(self.hidden)):
            x = torch.baddbmm(p[f"fc{i}.bias"].unsqueeze(1), x, p[f"fc{i}.weight"].transpose(1, 2))
            if self.with_bn:
                x = self._batchnorm(i, x, training)
            x = self._activate(x)
            if record:
                outputs.append(x)
        z = torch.baddbmm(p["out.bias"].unsqueeze(1), x, p["out.weight"].transpose(1, 2)).squeeze(-1)
        return self._output(z), outputs

    def _output(self, z: torch.Tensor) -> torch.Tensor:
        """z (members, n) through each member's output ReLU, if it has one (by the mask where some have none:
        `where` takes each member's row as it is, bit for bit, and so does its backward)."""
        if self.out_mask is not None:
            return torch.where(self.out_mask, torch.relu(z), z)
        return torch.relu(z) if self.output_relu else z

    def validate(self, x: torch.Tensor) -> torch.Tensor:
        """The validation logits (members, n) of the shared inputs x (n, features), BatchNorm in eval mode: each
        branch (members sharing BatchNorm or not and an activation) through the whole model on its own, its rows
        kept as (samples, members, width), so that BatchNorm's channels are a view and no layer joins slices;
        the shared inputs meet every member's first layer in one matrix product."""
        with torch.no_grad():
            if self.bn_mask is not None or self.activations is not None:
                return self.forward(x.expand(self.size, *x.shape), training=False)[0]
            return self._output(torch.cat([self._evaluate(x, a, b, bn, act) for a, b, bn, act in self.branches]))

    def _evaluate(self, x: torch.Tensor, a: int, b: int, bn: tuple[float, float] | None, act: torch.nn.Module
                  ) -> torch.Tensor:
        """Members a..b's logits (b - a, n) of x (n, features), before any output ReLU, all of them with
        BatchNorm's `bn` (eps, momentum) or without it (None) and with activation `act`."""
        p, k, n = self.params, b - a, x.shape[0]
        h = x
        for i, width in enumerate(self.hidden):
            weight, bias = p[f"fc{i}.weight"][a:b], p[f"fc{i}.bias"][a:b]  # (k, width, inputs), (k, width)
            if i == 0:  # (n, features) @ (features, k * width): every member's units side by side
                h = torch.addmm(bias.reshape(1, -1), x, weight.reshape(k * width, -1).t())
            else:  # (n, k, inputs) -> (n, k, width), a member's units by its own weights
                h = torch.einsum("nki,kwi->nkw", h.view(n, k, -1), weight).add_(bias).reshape(n, k * width)
            if bn is not None:
                h = self._channels(i, h, a, k, bn, training=False)
            h = act(h)
        weight, bias = p["out.weight"][a:b], p["out.bias"][a:b]  # (k, 1, inputs), (k, 1)
        if self.hidden:
            z = h.view(n, k, -1).mul_(weight.view(1, k, -1)).sum(dim=2).t() + bias  # h is this pass's own
        else:
            z = torch.addmm(bias.reshape(1, -1), x, weight.reshape(k, -1).t()).t()
        return z

    def _batchnorm(self, i: int, x: torch.Tensor, training: bool) -> torch.Tensor:
        if self.bn_mask is not None:
            return torch.where(self.bn_mask, self._normalise(i, x, 0, self.bn_shared, training), x)
        parts = [self._normalise(i, part, a, bn, training) if bn is not None else part
                 for part, (a, _, bn) in zip(_split(x, self.bn_runs), self.bn_runs)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _normalise(self, i: int, x: torch.Tensor, first: int, bn: tuple[float, float], training: bool
                   ) -> torch.Tensor:
        """BatchNorm of members first.. (x: (those members, batch, width)), with their own statistics and the
        (eps, momentum) `bn` they share."""
        m, b, w = x.shape
        out = self._channels(i, x.transpose(0, 1).reshape(b, m * w), first, m, bn, training=training)
        return out.reshape(b, m, w).transpose(0, 1).contiguous()  # a strided operand slows what follows

    def _channels(self, i: int, flat: torch.Tensor, first: int, m: int, bn: tuple[float, float], *,
                  training: bool) -> torch.Tensor:
        """BatchNorm `i` of members first..first + m, `flat` (samples, m * width): every member's units are
        channels, with the member's own statistics (views of `running`: updated in place) and affine parameters,
        and the (eps, momentum) `bn` they share."""
        w = flat.shape[1] // m
        eps, momentum = bn
        mean, var = (t[first * w:(first + m) * w] for t in self.running[i])
        return F.batch_norm(flat, mean, var, self.params[f"bn{i}.weight"][first:first + m].reshape(-1),
                            self.params[f"bn{i}.bias"][first:first + m].reshape(-1), training, momentum, eps)

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations is not None:
            out = None
            for act, mask in self.activations:
                y = act(x)
                out = y if out is None else torch.where(mask, y, out)
            return out
        parts = [act(part) for part, (_, _, act) in zip(_split(x, self.act_runs), self.act_runs)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def bn_snapshot(self) -> torch.Tensor | None:
        """Every member's BatchNorm running statistics, (members, n) in `BatchNormSnapshot.take`'s order: per
        layer the running variance, then the running mean."""
        if not self.running:
            return None
        m = self.size
        return torch.cat([t.view(m, -1) for mean, var in self.running for t in (var, mean)], dim=1).float()

    def member_rows(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each member's own elements of a (members, n) tensor, as the single model's flat vector."""
        rows = flat.unbind(0)
        if not any(o is not None for o in self.own):
            return list(rows)
        plain = next(o for o in self.own if o is not None)
        short = flat.index_select(1, plain).unbind(0)
        return [rows[k] if o is None else short[k] for k, o in enumerate(self.own)]

    def single(self, k: int) -> Classifier:
        """Member k's own model as the single-run trainer builds it (its initial weights; the random state is left
        as it was), built the first time it is asked for."""
        if k not in self._singles:
            state = torch.random.get_rng_state()
            torch.default_generator.manual_seed(self.cfgs[k].seed)
            self._singles[k] = build_model(self.cfgs[k], self.n_features).to(device=self.device, dtype=self.dtype)
            torch.random.set_rng_state(state)
        return self._singles[k]

    def load_member(self, k: int) -> Classifier:
        """Member k's single model, with the member's current parameters and BatchNorm statistics."""
        single = self.single(k)
        row = self.values[k] if self.own[k] is None else self.values[k, self.own[k]]
        with torch.no_grad():
            at = 0
            for p in single.parameters():
                p.copy_(row[at:at + p.numel()].view_as(p))
                at += p.numel()
            bns = [mod for _, mod in single.batchnorms()]
            for (mean, var), bn in zip(self.running, bns):
                bn.running_mean.copy_(mean.view(self.size, -1)[k])
                bn.running_var.copy_(var.view(self.size, -1)[k])
        return single
