"""Population training against the single-run trainer, member by member: the same rows (keys, steps, epochs), the
same summary keys, values equal within float tolerance (in float64 the only differences are the rounding of
batched products: observed up to ~1e-10 relative), the same status. Key sets are compared exactly, so a
measurement added to the single trainer and missed here fails these tests."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import threading
import time

import pytest
import torch

from core.analysis.findings import findings_for
from core.cli.study import add_study_parser, cmd_study
from core.experiment.config import ExperimentConfig
from core.experiment.data import load_dataset
from core.jobs.populations import resume_study_populations, tasks
from core.jobs.spec import StudySpec, expand, run_key, slot_key
from core.jobs.studies import open_study
from core.store import Store
from core.training.groups import group_key, populations
from core.training.population import train_population
from core.training.reporting import MemoryReporter
from core.training.trainer import train

pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")
CPU = torch.device("cpu")
NEVER = 1e9  # flush by steps only, so that single and population flush at the same steps
BASE = ExperimentConfig(dataset="gaussian", n_samples=160, hidden=(8,), epochs=3, batch_size=32, dtype="float64",
                        device="cpu")


def single(cfg: ExperimentConfig, data, device: torch.device = CPU, **kw) -> MemoryReporter:
    rep = MemoryReporter(stop_after_flushes=kw.pop("stop_after_flushes", None))
    train(cfg, rep, data=data, device=device, flush_every_s=NEVER, **kw)
    return rep


def population(cfgs: list[ExperimentConfig], data, stops: dict[int, int] | None = None,
               device: torch.device = CPU, **kw) -> list[MemoryReporter]:
    reps = [MemoryReporter(stop_after_flushes=(stops or {}).get(i)) for i in range(len(cfgs))]
    train_population(cfgs, reps, data=data, device=device, flush_every_s=NEVER, **kw)
    return reps


def close(a, b, rel: float, abs_: float) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(close(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(close(x, y, rel, abs_) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b


# Counts of exact events whose inputs are zero up to rounding: under BatchNorm a hidden bias's gradient is ~1e-17
# (BatchNorm removes the bias), and whether plain SGD's update of such a bias rounds away depends on how the
# batched products rounded. Compared within this absolute tolerance (a few parameters of ~100).
ROUNDING_COUNTS = {"stuck_update_frac": 0.05, "median_stuck_update_frac": 0.05}


def assert_same_run(one: MemoryReporter, member: MemoryReporter, *, rel: float = 1e-7, abs_: float = 1e-9) -> None:
    assert member.result.status == one.result.status, member.result.error
    assert member.result.error == one.result.error
    assert member.keys() == one.keys()
    assert member.info.total_steps == one.info.total_steps and member.info.dtype == one.info.dtype
    for key in sorted(one.keys()):
        a = [(r.step, r.epoch) for r in one.rows if r.key == key]
        b = [(r.step, r.epoch) for r in member.rows if r.key == key]
        assert a == b, key
        tol = ROUNDING_COUNTS.get(key, abs_)
        assert close(one.series(key), member.series(key), rel, tol), (key, one.series(key), member.series(key))
    s1, s2 = one.result.summary, member.result.summary
    assert set(s1) == set(s2), set(s1) ^ set(s2)
    for key in s1:
        assert close(s1[key], s2[key], rel, ROUNDING_COUNTS.get(key, abs_)), (key, s1[key], s2[key])


def check(cfgs: list[ExperimentConfig], device: torch.device = CPU, **kw) -> list[MemoryReporter]:
    data = load_dataset(cfgs[0])
    members = population(cfgs, data, device=device, **kw)
    for cfg, member in zip(cfgs, members):
        assert_same_run(single(cfg, data, device=device, **kw), member)
    return members


DIFFERENCES = {
    "seed": [{"seed": 0}, {"seed": 7}],
    "lr": [{"lr": 0.01}, {"lr": 0.05}],
    "weight_decay": [{"weight_decay": 0.0}, {"weight_decay": 0.05}],
    "activation": [{"activation": a} for a in ("relu", "elu", "tanh", "leaky_relu", "identity")],
    "loss": [{"loss": "bce"}, {"loss": "bce_with_logits"}],
    "batchnorm": [{"batchnorm": False}, {"batchnorm": True}],
    "clamp_eps": [{"clamp_eps": None}, {"clamp_eps": 1e-3}, {"clamp_eps": 0.2}],
    "pos_weight": [{"pos_weight": 1.0}, {"pos_weight": 3.0}],
    # BatchNorm's eps and momentum: members with BatchNorm, one without (its eps and momentum unused)
    "bn_eps": [{"batchnorm": True, "bn_eps": 1e-5}, {"batchnorm": True, "bn_eps": 0.5},
               {"batchnorm": False, "bn_eps": 0.1}],
    "bn_momentum": [{"batchnorm": True, "bn_momentum": 0.1}, {"batchnorm": True, "bn_momentum": 0.9},
                    {"batchnorm": False, "bn_momentum": 0.5}],
    "elu_alpha": [{"activation": "elu", "elu_alpha": 1.0}, {"activation": "elu", "elu_alpha": 0.2}],
    "hidden_bias_init": [{"hidden_bias_init": None}, {"hidden_bias_init": -2.0}],
    "momentum": [{"optimizer": "sgd", "momentum": 0.0}, {"optimizer": "sgd", "momentum": 0.9},
                 {"optimizer": "sgd", "momentum": 0.5, "weight_decay": 0.01}],
    "grad_clip": [{"grad_clip": None}, {"grad_clip": 0.05}, {"grad_clip": 1e3}],
    # the article's output ReLU, with hidden ReLUs and without (`dead_relu_frac` counts them all, or is absent)
    "output_relu": [{"output_relu": False}, {"output_relu": True}, {"output_relu": True, "activation": "elu"},
                    {"activation": "elu"}, {"output_relu": True, "loss": "bce"}],
    "optimizer": [{"optimizer": "adam"}, {"optimizer": "sgd"}, {"optimizer": "adamw", "weight_decay": 0.05},
                  {"optimizer": "sgd", "momentum": 0.9}, {"optimizer": "adam", "weight_decay": 0.05}],
    # members that end before the others: finished after their own last epoch, as their lone runs
    "epochs": [{"epochs": 3}, {"epochs": 1}, {"epochs": 2, "seed": 4}, {"epochs": 1, "optimizer": "sgd"}],
}


@pytest.mark.parametrize("field", DIFFERENCES)
def test_each_batchable_difference_alone_equals_single_runs(field):
    cfgs = [BASE.replace(**change) for change in DIFFERENCES[field]]
    assert len({group_key(c) for c in cfgs}) == 1
    check(cfgs)


MIXED = [BASE.replace(seed=s, lr=lr, weight_decay=wd, activation=act, loss=loss, batchnorm=bn, clamp_eps=eps,
                      pos_weight=pw)
         for s, lr, wd, act, loss, bn, eps, pw in [
             (0, 0.01, 0.0, "relu", "bce", False, None, 1.0),
             (1, 0.05, 0.01, "elu", "bce_with_logits", True, None, 2.0),
             (2, 0.02, 0.0, "relu", "bce", True, 1e-4, 1.0),
             (0, 0.01, 0.1, "tanh", "bce_with_logits", False, None, 0.5),
             (3, 0.2, 0.0, "leaky_relu", "bce", True, 0.05, 3.0)]]
# and the fields batched since: BatchNorm's eps and momentum, ELU's alpha, the hidden biases' start, SGD's momentum,
# gradient clipping, the output ReLU and the optimizer, each differing among MIXED's members
MIXED_MORE = [cfg.replace(bn_eps=eps, bn_momentum=bm, elu_alpha=alpha, hidden_bias_init=bias, momentum=mom,
                          grad_clip=clip, output_relu=out)
              for cfg, (eps, bm, alpha, bias, mom, clip, out) in zip(MIXED, [
                  (1e-5, 0.1, 1.0, None, 0.0, None, True),
                  (0.3, 0.1, 0.5, 0.5, 0.9, 0.1, True),
                  (1e-5, 0.6, 1.0, None, 0.0, 0.02, False),
                  (1e-3, 0.2, 2.0, -1.0, 0.5, None, False),
                  (1e-5, 0.6, 1.0, None, 0.9, None, True)])]


@pytest.mark.parametrize("options", [
    {},
    {"optimizer": "sgd", "momentum": 0.9},
    {"optimizer": "sgd"},
    {"optimizer": "adamw"},
    {"hidden": (6, 5), "grad_clip": 0.5},
    {"log_every": 3, "hidden": ()},
    {"diagnostics": "loss", "output_relu": True},
    # 120 training samples: batches of 32, 32, 32 and 24, as a flush reduces each batch size's steps apart;
    # with and without every step logged, and with the output ReLU (its batch maximum)
    {"n_samples": 150, "output_relu": True},
    {"n_samples": 150, "log_every": 2, "hidden": (6, 5)},
])
def test_every_difference_mixed_in_one_population_equals_single_runs(options):
    check([cfg.replace(**options) for cfg in MIXED])


@pytest.mark.parametrize("options", [{"optimizer": "sgd"}, {}, {"optimizer": "sgd", "hidden": (6, 5), "log_every": 2},
                                     {"optimizer": ["sgd", "adam", "sgd", "adamw", "adam"]},
                                     {"epochs": [3, 1, 2, 3, 2], "log_every": 2}])
def test_the_fields_batched_later_mixed_in_one_population_equal_single_runs(options):
    """(An option given as a list gives each member its own.)"""
    cfgs = [cfg.replace(**{k: v[i] if isinstance(v, list) else v for k, v in options.items()})
            for i, cfg in enumerate(MIXED_MORE)]
    assert len({group_key(c) for c in cfgs}) == 1
    check(cfgs)


@pytest.mark.parametrize("options", [{"n_samples": 150, "output_relu": True},
                                     {"n_samples": 150, "log_every": 2, "hidden": (6, 5)}])
def test_a_window_stacked_in_blocks_of_steps_equals_single_runs(monkeypatch, options):
    """A flush stacks a window's steps in blocks of at most `STACK_ROWS` member-steps: 7 steps of these 5 members
    here, so each window is many blocks, of two batch sizes, their last blocks short."""
    from core.training import population_window

    monkeypatch.setattr(population_window, "STACK_ROWS", 5 * 7)
    check([cfg.replace(**options) for cfg in MIXED])


def in_window(monkeypatch, slots: int | None = None) -> None:
    """Take the update statistics as on a GPU (`population_step.InWindow`), in room for `slots` logged steps."""
    from core.training import population_step

    monkeypatch.setattr(population_step, "IN_WINDOW", True)
    if slots is not None:
        init = population_step.InWindow.__init__
        monkeypatch.setattr(population_step.InWindow, "__init__", lambda self, ranges, _: init(self, ranges, slots))


@pytest.mark.parametrize("options", [{}, {"hidden": (6, 5), "grad_clip": 0.5}, {"optimizer": "adamw"},
                                     {"log_every": 3, "hidden": ()}, {"n_samples": 150, "log_every": 2}])
def test_statistics_taken_in_the_window_as_on_a_gpu_equal_single_runs(monkeypatch, options):
    """On a GPU the update statistics are reduced at the flush from each logged step's copied rows (`InWindow`),
    not at the step: every member still equals its single run, also when the slots, not the steps, decide when
    the window flushes (room for 3 logged steps here: 3 * log_every steps)."""
    in_window(monkeypatch, slots=3)
    cfgs = [cfg.replace(**options) for cfg in MIXED]
    members = check(cfgs)
    steps, every = members[0].info.total_steps, 3 * cfgs[0].log_every
    assert all(m.flushes == steps // every + 1 for m in members)  # every third logged step, and the last


def test_members_that_end_early_finish_as_their_single_runs_in_the_window_way_too(monkeypatch):
    """Members of fewer epochs finish after their own last epoch, the others going on: each equals its single run
    with the statistics taken as on a GPU too (slots for 3 logged steps), and each is finished (`on_finish`) once,
    with its own total steps."""
    in_window(monkeypatch, slots=3)
    finishes: dict[int, int] = {}
    on_finish = MemoryReporter.on_finish

    def counted(self: MemoryReporter, result) -> None:
        finishes[id(self)] = finishes.get(id(self), 0) + 1
        on_finish(self, result)
    monkeypatch.setattr(MemoryReporter, "on_finish", counted)
    cfgs = [cfg.replace(epochs=e) for cfg, e in zip(MIXED, (4, 1, 2, 4, 3))]
    members = check(cfgs)
    assert [finishes[id(m)] for m in members] == [1] * 5
    per_epoch = members[0].info.total_steps // 4
    assert [m.info.total_steps for m in members] == [e * per_epoch for e in (4, 1, 2, 4, 3)]
    assert [m.result.summary["steps"] for m in members] == [e * per_epoch for e in (4, 1, 2, 4, 3)]


def test_a_member_at_its_last_flush_is_not_asked_to_stop():
    """A member whose epochs end before the others' is flushed then, and, as a lone run's last flush, that flush
    asks it nothing: a cancel request seen only then leaves it finished, as its single run."""
    cfgs = [BASE.replace(epochs=3), BASE.replace(epochs=1, seed=1)]
    data = load_dataset(cfgs[0])
    members = population(cfgs, data, stops={1: 1})  # its reporter asks to stop once one flush is in
    alone = single(cfgs[1], data, stop_after_flushes=1)
    assert alone.result.status == members[1].result.status == "finished"
    assert_same_run(alone, members[1])
    assert_same_run(single(cfgs[0], data), members[0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_two_ways_of_taking_the_update_statistics_give_the_same_runs_bit_for_bit(monkeypatch, dtype):
    """`AtStep` (the CPU's) and `InWindow` (a GPU's) reduce the same rows with the same operations: every member's
    rows, in float32 and bfloat16, are equal bit for bit whichever takes them."""
    from core.training import population_step

    cfgs = [cfg.replace(dtype=dtype, epochs=2, hidden=(6, 5)) for cfg in MIXED]
    data = load_dataset(cfgs[0])
    runs = []
    for way in (False, True):
        monkeypatch.setattr(population_step, "IN_WINDOW", way)
        runs.append(population(cfgs, data))
    for at_step, in_window in zip(*runs):
        assert at_step.keys() == in_window.keys() and "update_norm" in at_step.keys()
        for key in at_step.keys():
            assert close(at_step.series(key), in_window.series(key), 0.0, 0.0), key


def test_float32_members_match_within_float32_rounding():
    cfgs = [cfg.replace(dtype="float32", epochs=2) for cfg in MIXED]
    data = load_dataset(cfgs[0])
    for cfg, member in zip(cfgs, population(cfgs, data)):
        one = single(cfg, data)
        assert member.keys() == one.keys() and set(member.result.summary) == set(one.result.summary)
        assert close(one.series("train_loss"), member.series("train_loss"), 1e-3, 1e-5)
        assert close(one.series("val_loss"), member.series("val_loss"), 1e-2, 1e-4)


@pytest.mark.parametrize("changes", [
    [{"optimizer": "sgd", "lr": 0.01}, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
     {"optimizer": "sgd", "lr": 0.03, "momentum": 0.5, "weight_decay": 0.1}],
    [{"optimizer": "adamw", "lr": 0.01}, {"optimizer": "adamw", "lr": 0.05, "weight_decay": 0.01},
     {"optimizer": "adamw", "lr": 0.03, "weight_decay": 0.1}]])
def test_bfloat16_members_take_their_factors_as_their_single_runs_do(changes):
    """A lone run's optimizer takes its learning rate, momentum, weight decay and clip norm as Python numbers, which
    torch applies in float32 to a bfloat16 tensor; a population's per-member columns are float32 for the same
    reason (rounded to bfloat16, 0.01 is 0.010009765625). Here, where the batched training products round as the
    lone model's, every member's training losses are its single run's bit for bit (they were not, with bfloat16
    columns); the validation pass's products, taken another way, round within bfloat16's resolution. (Clipping
    is not in it: a member's gradient norm sums its row in another order than `clip_grad_norm_` does.)"""
    cfgs = [BASE.replace(dtype="bfloat16", epochs=5, seed=k, **change) for k, change in enumerate(changes)]
    data = load_dataset(cfgs[0])
    for cfg, member in zip(cfgs, population(cfgs, data)):
        one = single(cfg, data)
        assert one.series("train_loss") == member.series("train_loss")
        assert close(one.series("val_loss"), member.series("val_loss"), 2**-7, 0.0)


def test_findings_of_a_member_are_those_of_its_single_run():
    cfg = BASE.replace(loss="bce", lr=3.0, optimizer="sgd", standardize=False, feature_scale=50.0, epochs=2)
    data = load_dataset(cfg)
    member = population([cfg, cfg.replace(seed=1)], data)[0]
    one = single(cfg, data)
    assert_same_run(one, member)
    titles = [f.title for f in findings_for(cfg.to_dict(), one.result.summary, status=one.result.status)]
    assert titles and titles == [f.title for f in findings_for(cfg.to_dict(), member.result.summary,
                                                                 status=member.result.status)]


def test_a_diverging_member_stops_alone():
    cfgs = [BASE.replace(optimizer="sgd", lr=lr, loss="bce_with_logits", hidden=(32, 32), epochs=5, seed=s)
            for lr, s in ((0.05, 0), (90.0, 1), (0.01, 2))]
    members = check(cfgs, flush_every_steps=4)
    assert [m.result.status for m in members] == ["finished", "diverged", "finished"]
    bad = members[1].result.summary
    assert bad["diverged_step"] < members[0].result.summary["steps"]


def test_a_cancelled_member_stops_alone():
    data = load_dataset(BASE)
    cfgs = [BASE.replace(seed=s) for s in range(3)]
    members = population(cfgs, data, stops={1: 2}, flush_every_steps=4)
    assert [m.result.status for m in members] == ["finished", "cancelled", "finished"]
    assert_same_run(single(cfgs[1], data, stop_after_flushes=2, flush_every_steps=4), members[1])
    assert_same_run(single(cfgs[0], data, flush_every_steps=4), members[0])


def test_a_failing_reporter_fails_its_member_only():
    class Broken(MemoryReporter):
        def on_metrics(self, batch, *, step):
            raise OSError("disk full")

    data = load_dataset(BASE)
    reps = [MemoryReporter(), Broken(), MemoryReporter()]
    train_population([BASE.replace(seed=s) for s in range(3)], reps, data=data, device=CPU)
    assert [r.result.status for r in reps] == ["finished", "failed", "finished"]
    assert "disk full" in reps[1].result.error


def test_a_member_whose_store_refuses_writes_is_interrupted_not_failed():
    """The store's trouble (`StoreUnavailable`: locked, full, gone) stops its member as interrupted, which a study
    reruns; the others go on."""
    from core.training.reporting import StoreUnavailable

    class LockedOut(MemoryReporter):
        def on_metrics(self, batch, *, step):
            raise StoreUnavailable("the store could not take the run's values: database is locked")

    reps = [MemoryReporter(), LockedOut(), MemoryReporter()]
    train_population([BASE.replace(seed=s) for s in range(3)], reps, data=load_dataset(BASE), device=CPU)
    assert [r.result.status for r in reps] == ["finished", "interrupted", "finished"]
    assert reps[1].result.error == "the store could not take the run's values: database is locked"


def test_group_key_and_populations():
    a = BASE.replace(lr=0.1, seed=3, activation="elu", loss="bce_with_logits", batchnorm=True, pos_weight=2.0)
    assert group_key(a) == group_key(BASE)
    for change in ({"hidden": (4,)}, {"batch_size": 16}, {"data_seed": 2}, {"dtype": "float32"},
                   {"n_samples": 200}, {"noise": 0.1},
                   {"log_every": 2}, {"diagnostics": "loss"}):
        assert group_key(BASE.replace(**change)) != group_key(BASE), change
    # 129 training samples in batches of 32 leave a last batch of one, which BatchNorm drops: not batched
    odd = BASE.replace(n_samples=161)
    assert group_key(odd.replace(batchnorm=True)) != group_key(odd)
    cfgs = [BASE, BASE.replace(hidden=(4,)), BASE.replace(seed=1), BASE.replace(hidden=(4,), seed=1), BASE]
    assert populations(cfgs) == [[0, 2, 4], [1, 3]]
    assert populations(cfgs, max_size=2) == [[0, 2], [4], [1, 3]]
    with pytest.raises(ValueError, match="differ only in"):
        train_population(cfgs[:2], [MemoryReporter(), MemoryReporter()])


@pytest.mark.parametrize("cfg", [BASE, BASE.replace(hidden=(), batchnorm=False), BASE.replace(hidden=(6, 5)),
                                 BASE.replace(dataset="breast_cancer", hidden=(4,), batchnorm=True)])
def test_parameters_counts_a_members_row_from_its_config(cfg):
    """`groups.parameters` (torch-free, for the scheduler) is the width of the stacked row of a population with
    BatchNorm, and the single model's parameter count with it."""
    from core.experiment.models import build_model
    from core.training.groups import parameters
    from core.training.stacked import StackedClassifier

    data = load_dataset(cfg)
    with_bn = [cfg.replace(batchnorm=True), cfg.replace(batchnorm=False, seed=1)]
    row = StackedClassifier(with_bn, data.n_features, device=CPU, dtype=torch.float64).values.shape[1]
    assert parameters(cfg) == row
    assert parameters(cfg) == sum(p.numel() for p in build_model(with_bn[0], data.n_features).parameters())


def test_a_csv_configs_parameters_count_its_header_and_wide_models_make_smaller_populations(tmp_path, monkeypatch):
    from core.training import groups

    csv = tmp_path / "d.csv"
    csv.write_text("a,b,c,label\n1,2,3,0\n")
    cfg = BASE.replace(dataset="csv", csv_path=str(csv), hidden=(8,))
    assert groups.parameters(cfg) == (3 * 8 + 8) + 2 * 8 + (8 + 1)
    quoted = tmp_path / "q.csv"  # a quoted column name holding a comma is one column, as pandas reads it
    quoted.write_text('"width, cm",b,label\n1,2,0\n')
    assert groups.parameters(cfg.replace(csv_path=str(quoted))) == (2 * 8 + 8) + 2 * 8 + (8 + 1)
    assert groups.parameters(cfg.replace(csv_path=str(tmp_path / "gone.csv"))) == (10 * 8 + 8) + 2 * 8 + (8 + 1)
    # hidden (512, 512), float32 on 10 features: 270,849 parameters with BatchNorm's, 12 rows of them (13 MB) a member
    wide = BASE.replace(hidden=(512, 512), dtype="float32")
    n = (10 * 512 + 512) + (512 * 512 + 512) + (512 + 1) + 2 * 1024
    assert groups.parameters(wide) == n and groups.population_limit(wide) == 2**30 // (12 * n * 4) == 82
    assert groups.population_limit(BASE) == groups.MAX_POPULATION  # small models: the member cap
    assert groups.population_limit(BASE.replace(hidden=(4096, 4096, 4096))) == 1
    monkeypatch.setattr(groups, "POPULATION_BYTES", 3 * 12 * groups.parameters(BASE) * 8)  # 3 float64 members
    cfgs = [BASE.replace(seed=s) for s in range(7)] + [BASE.replace(hidden=(4,), seed=s) for s in range(2)]
    assert groups.populations(cfgs) == [[0, 1, 2], [3, 4, 5], [6], [7, 8]]
    assert groups.populations(cfgs, max_size=2) == [[0, 1], [2, 3], [4, 5], [6], [7, 8]]


# ---------------------------------------------------------------------- studies trained as populations
@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_tasks_group_cells_and_split_them_across_workers():
    spec = StudySpec(name="t", base=BASE.to_dict(), vary={"hidden": [[8], [4]], "batchnorm": [False, True]},
                     seeds=5)
    slots = expand(spec)
    grouped = tasks(slots, 2)
    assert sorted(len(t) for t in grouped) == [5, 5, 5, 5]  # two widths, each split in two populations
    assert all(len({group_key(s.cfg) for s in t}) == 1 for t in grouped)
    assert sorted(slot_key(s.variant, s.seed) for t in grouped for s in t) == sorted(
        slot_key(s.variant, s.seed) for s in slots)
    assert [len(t) for t in tasks(slots[:3], 2)] == [2, 1]  # hidden 8 seed 0 and 1 together; hidden 4 alone
    assert tasks(slots[:2], 8) == [slots[:2]]  # too few to split


def test_a_study_trains_as_populations_and_each_run_equals_its_single_run(db):
    store = Store(db)
    spec = StudySpec(name="pop", base=BASE.replace(epochs=2).to_dict(),
                     vary={"hidden": [[8], [4]], "batchnorm": [False, True]}, seeds=2)
    study_id = open_study(store, spec)
    seen = []
    outcome = resume_study_populations(store, study_id, workers=2, on_finished=seen.append)
    runs = store.list_runs(study_id=study_id)
    assert len(runs) == 8 and {r.status for r in runs} == {"finished"} and outcome.remaining == 0
    assert len(seen) == 8 and seen[-1].done == seen[-1].total == 8
    assert len({run_key(spec, r.config) for r in runs}) == 8
    pids = {r.id: r.pid for r in runs}
    assert len(set(pids.values())) <= 2  # two populations of four, one per worker
    for run in runs[:3]:
        cfg = ExperimentConfig.from_dict(run.config)
        one = single(cfg, load_dataset(cfg))
        assert set(run.summary) == set(one.result.summary)
        assert close(run.summary["final_val_loss"], one.result.summary["final_val_loss"], 1e-7, 1e-9)
        assert set(store.metric_keys(run.id)) == one.keys()
    assert resume_study_populations(store, study_id, workers=2).run_ids == []  # nothing left: nothing trained


def test_resume_of_a_killed_population_study_trains_no_cell_twice(db):
    store = Store(db)
    base = ExperimentConfig(n_samples=1000, epochs=200, diagnostics="loss", optimizer="sgd", loss="bce_with_logits",
                            hidden=(32, 32))
    spec = StudySpec(name="killed", base=base.to_dict(), vary={"lr": [0.01, 90.0], "activation": ["relu", "elu"]},
                     seeds=2)
    study_id = open_study(store, spec)
    killed: list[int] = []

    def kill_a_population_mid_run():
        """Once a member of a population has diverged (its run is stored) and its others still run, SIGKILL
        that population's worker."""
        watcher = Store(db)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = watcher.list_runs(study_id=study_id)
            diverged = {r.pid for r in runs if r.status == "diverged"}
            running = [r for r in runs if r.status == "running" and r.pid in diverged and r.total_steps
                       and r.progress_step < r.total_steps // 2]
            if len(runs) == 8 and running:
                os.kill(running[0].pid, signal.SIGKILL)
                killed.extend(r.id for r in running if r.pid == running[0].pid)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_population_mid_run)
    killer.start()
    outcome = resume_study_populations(store, study_id, workers=2)
    killer.join()
    assert killed
    runs = {r.id: r for r in store.list_runs(study_id=study_id)}
    assert len(runs) == 8 and {runs[i].status for i in killed} == {"interrupted"}
    assert outcome.remaining == len(killed)
    kept = {i for i, r in runs.items() if r.status in ("finished", "diverged")}
    assert len(kept) == 8 - len(killed) and any(runs[i].status == "diverged" for i in kept)

    outcome = resume_study_populations(store, study_id, workers=2)
    after = {r.id: r for r in store.list_runs(study_id=study_id)}
    assert len(outcome.run_ids) == len(killed) and outcome.kept == len(kept) and outcome.remaining == 0
    assert kept <= set(after) and not set(killed) & set(after)  # the results kept, the interrupted replaced
    assert len({run_key(spec, r.config) for r in after.values()}) == 8 == len(after)
    assert {r.status for r in after.values()} == {"finished", "diverged"}


@pytest.mark.parametrize("flag, shared", [([], True), (["--no-population"], False)])
def test_the_study_command_trains_populations_unless_told_not_to(db, flag, shared):
    parser = argparse.ArgumentParser()
    add_study_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", "--vary", "batchnorm=false,true", "--seeds", "2", "--epochs", "1",
                              "--n-samples", "200", "--workers", "1", "--json", *flag])
    out, err = io.StringIO(), io.StringIO()
    assert cmd_study(args, Store(db), out, err) == 0
    runs = Store(db).list_runs()
    assert len(runs) == 4 and {r.status for r in runs} == {"finished"}
    assert json.loads(out.getvalue())["runs"] == 4
    # one worker: as a population its four runs are one task, created together before any of them trains
    created_before_started = max(r.created_at for r in runs) <= min(r.started_at for r in runs)
    assert created_before_started == shared
    # and it says so before training, as the Studies page does
    assert ("Trains as one batched model of 4 runs, side by side.\n" in err.getvalue()) == shared


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_step_stats_add_up_to_each_members_own_norms_and_stuck_counts(dtype):
    """The per-layer statistics a population takes at each logged step, summed over a member's own layers, are
    what `GradLayout.norms` and `updates` give that member's own row: the counts exactly (the member-by-member
    tests compare `stuck_update_frac` only within a rounding tolerance), the norms to the rounding of their sums.
    Members with and without BatchNorm, two hidden layers, gradients with exact zeros, values that did not move;
    float64 and float32 rows squared as they are, bfloat16 ones widened first. A step's statistics are its own
    when the window's buffers are used again."""
    from core.training.diagnostics import GradLayout, norms_from_squares, updates_from_squares
    from core.training.population_step import StepStats
    from core.training.stacked import StackedClassifier

    cfgs = [BASE.replace(hidden=(6, 5), batchnorm=bn, seed=s) for s, bn in enumerate((True, False, True, False))]
    model = StackedClassifier(cfgs, 4, device=CPU, dtype=dtype)
    singles = [model.single(k) for k in range(model.size)]
    layouts = [GradLayout(s.named_layers(), list(s.parameters())) for s in singles]
    step_stats = StepStats(model.layer_ranges)
    gen = torch.Generator().manual_seed(3)
    grads = torch.randn(model.values.shape, generator=gen, dtype=torch.float64).to(dtype)
    grads[torch.rand(grads.shape, generator=gen) < 0.3] = 0.0
    before = torch.randn(grads.shape, generator=gen, dtype=torch.float64).to(dtype)
    after = before - 0.01 * grads
    unmoved = torch.rand(grads.shape, generator=gen) < 0.2  # updates that rounded away
    after[unmoved] = before[unmoved]
    result = step_stats(grads, before, after)
    as_returned = result.clone()
    g_sq, a_sq, d_sq, live, stuck = result
    names = list(model.layer_ranges)
    for k, layout in enumerate(layouts):
        def own(t: torch.Tensor) -> torch.Tensor:
            return t[k] if model.own[k] is None else t[k, model.own[k]]
        cols = [names.index(name) for name in layout.ranges]
        assert int(live[k, cols].sum()) == int((own(grads) != 0).sum())
        assert int(stuck[k, cols].sum()) == int(((own(after) - own(before) == 0) & (own(grads) != 0)).sum())
        want = {**layout.norms(own(grads)[None]),
                **layout.updates((own(after) - own(before))[None], own(after)[None], own(grads)[None])}
        got = {**norms_from_squares({n: g_sq[k, c][None] for n, c in zip(layout.ranges, cols)}),
               **updates_from_squares({n: d_sq[k, c][None] for n, c in zip(layout.ranges, cols)},
                                      {n: a_sq[k, c][None] for n, c in zip(layout.ranges, cols)},
                                      stuck[k, cols].sum()[None], live[k, cols].sum()[None])}
        assert set(got) == set(want) and any(key.startswith("grad_norm/bn") for key in want) == cfgs[k].batchnorm
        for key in want:
            assert torch.allclose(got[key], want[key], rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0), (k, key)
        assert float(got["stuck_update_frac"]) == float(want["stuck_update_frac"]) > 0
    # the window reuses its buffers at every step: what an earlier step returned is its own, not theirs
    other = step_stats(grads * 2, before, after + 1)
    assert torch.equal(result, as_returned) and not torch.equal(other, result)
    assert torch.equal(step_stats(grads, before, after), result)
    kept = step_stats.before(after)
    assert kept.data_ptr() != after.data_ptr() and torch.equal(kept, after)


@pytest.mark.parametrize("clipped", [False, True])
def test_in_window_statistics_are_each_steps_own_at_the_flush(monkeypatch, clipped):
    """`InWindow` (a GPU's tracker) copies each logged step's gradients, values before and after into its slots;
    at the flush its statistics for the window, reduced in blocks of steps, are each step's `StepStats`, and a
    slot's rows are that step's as they were, though the tensors it copied from have changed since (the trainer
    reuses them). The gradients it returns are the copy: clipping the model's own in place leaves them as
    computed. Its slots grow as a window needs them, up to `slots`; it refuses a step past those; after a flush
    (`reset`) it fills them from the first again."""
    from core.training.population_step import InWindow, StepStats
    from core.training.stacked import StackedClassifier

    cfgs = [BASE.replace(hidden=(6, 5), batchnorm=bn, seed=s) for s, bn in enumerate((True, False, True))]
    model = StackedClassifier(cfgs, 4, device=CPU, dtype=torch.float32)
    monkeypatch.setattr(InWindow, "BLOCK", 2 * model.values.numel())  # blocks of two steps
    monkeypatch.setattr(InWindow, "FIRST_SLOTS", 2)  # slots made 2, then 4, then 5: the rows kept as they grow
    tracker, alone = InWindow(model.layer_ranges, slots=5), StepStats(model.layer_ranges)
    gen = torch.Generator().manual_seed(4)
    grads, values = torch.zeros_like(model.values), torch.zeros_like(model.values)
    want, kept = [], []
    for step in range(5):
        grads.copy_(torch.randn(grads.shape, generator=gen))
        grads[torch.rand(grads.shape, generator=gen) < 0.3] = 0.0
        values.copy_(torch.randn(values.shape, generator=gen))
        as_computed, before = tracker.grads(grads, clipped), tracker.before(values)
        kept.append([grads.clone(), values.clone()])
        if clipped:
            grads.mul_(0.5)
        values.sub_(0.01 * as_computed)
        unmoved = torch.rand(values.shape, generator=gen) < 0.2  # updates that rounded away
        values[unmoved] = before[unmoved]
        kept[-1].append(values.clone())
        assert tracker.after(step + 1, None, None, as_computed, before, values) == step
        want.append(alone(*kept[-1]).clone())
    with pytest.raises(RuntimeError, match="5 logged steps"):
        tracker.grads(grads, clipped)
    assert tracker.rows.shape[1] == 5
    got = tracker.collect(list(range(5)))
    assert got.shape == (5, 5, 3, len(model.layer_ranges))
    assert torch.equal(got, torch.stack(want, dim=1))
    keep = tracker.keeper()
    for step in range(5):
        assert all(torch.equal(a, b) for a, b in zip(keep(1, step + 1, step), kept[step]))
    assert torch.equal(tracker.collect([1, 2]), torch.stack(want[1:3], dim=1))
    tracker.reset()
    tracker.grads(grads, clipped)
    tracker.before(values)
    assert tracker.after(6, None, None, grads, values, values) == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_members_start_from_the_weights_their_own_models_are_built_with(dtype):
    """A population draws its members' initial weights with one model a parameter layout, drawn again for each
    member (`Classifier.redraw`): each row is, bit for bit, the parameters `build_model` gives that member's config
    under its seed (BatchNorm on and off, a constant hidden bias, two hidden layers or none), converted as
    `.to(dtype)` converts them. The random state is left as building the members one by one leaves it, and
    building a member's own model later (`single`) leaves it as it was."""
    from core.experiment.models import build_model
    from core.training.stacked import StackedClassifier

    cfgs = [BASE.replace(hidden=hidden, seed=s, batchnorm=bn, hidden_bias_init=bias)
            for s, (hidden, bn, bias) in enumerate([((6, 5), True, None), ((6, 5), False, None), ((6, 5), True, 0.1),
                                                    ((6, 5), False, -0.2), ((6, 5), False, None)])]
    cfgs.append(BASE.replace(hidden=(), seed=9))
    for group in (cfgs[:5], cfgs[5:]):
        model = StackedClassifier(group, 4, device=CPU, dtype=dtype)
        after_population = torch.random.get_rng_state()
        for k, cfg in enumerate(group):
            torch.manual_seed(cfg.seed)
            own = torch.cat([p.detach().reshape(-1) for p in build_model(cfg, 4).parameters()]).to(dtype)
            row = model.values[k] if model.own[k] is None else model.values[k, model.own[k]]
            assert torch.equal(row, own), k
        assert torch.equal(after_population, torch.random.get_rng_state())  # the last member's build leaves this
        torch.manual_seed(123)
        state = torch.random.get_rng_state()
        single = model.single(len(group) - 1)
        assert torch.equal(state, torch.random.get_rng_state()) and single is model.single(len(group) - 1)
        assert torch.equal(torch.cat([p.detach().reshape(-1) for p in single.parameters()]), row)


@pytest.mark.parametrize("ordered, hidden, output_relu, norms", [
    (True, (6, 5), False, 1), (False, (6, 5), False, 1), (True, (7,), True, 1), (True, (), True, 1),
    (True, (6, 5), False, 3), (False, (6, 5), False, 3), (True, (6,), "mixed", 1), (False, (), "mixed", 1)])
def test_stacked_layers_equal_each_members_own_model_on_slices_and_by_mask(ordered, hidden, output_relu, norms):
    """The stacked model's forward pass, its BatchNorm running statistics and its gradients are each member's own
    model's, whether members sharing a branch are adjacent (`stacking_order`: each branch on a slice of members)
    or interleaved past MAX_RUNS (each branch for every member, selected by a mask); and so are its validation
    logits (each branch through the model on its own), with one hidden layer, two, or none, and with an output ReLU
    for every member, none or some ("mixed"). With `norms` BatchNorm
    settings (eps, momentum) among the members, BatchNorm takes no mask: each setting's members are slices."""
    from core.training.stacked import MAX_RUNS, StackedClassifier, stacking_order

    settings = [(1e-5, 0.1), (0.5, 0.9), (1e-2, 0.5)][:norms]
    cfgs = [BASE.replace(hidden=hidden, seed=k, batchnorm=k % 2 == 0, activation=("relu", "elu", "tanh")[k % 3],
                         output_relu=k % 4 < 2 if output_relu == "mixed" else output_relu,
                         bn_eps=settings[k // 2 % norms][0],
                         bn_momentum=settings[k // 2 % norms][1]) for k in range(12)]
    if ordered:
        cfgs = [cfgs[i] for i in stacking_order(cfgs)]
    model = StackedClassifier(cfgs, 4, device=CPU, dtype=torch.float64)
    assert (len(model.bn_runs) <= MAX_RUNS and len(model.act_runs) <= MAX_RUNS) == ordered or not hidden
    assert (model.bn_mask is None) == (ordered or norms > 1) or not hidden
    assert (model.activations is None) == ordered
    x = torch.randn(len(cfgs), 16, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z, _ = model.forward(x)
    z.sum().backward()
    z_val = model.validate(x[0])
    for k in range(model.size):
        single = model.single(k)
        single.train()
        own = single(x[k]).squeeze(-1)
        assert torch.allclose(own, z[k], rtol=1e-12, atol=1e-12), k
        own.sum().backward()
        grads = torch.cat([p.grad.reshape(-1) for p in single.parameters()])
        row = model.grads[k] if model.own[k] is None else model.grads[k, model.own[k]]
        assert torch.allclose(grads, row, rtol=1e-10, atol=1e-12), k
        single.eval()
        with torch.no_grad():
            assert torch.allclose(single(x[0]).squeeze(-1), z_val[k], rtol=1e-12, atol=1e-12), k


@pytest.mark.parametrize("host_flags, log_every", [(True, 1), (False, 1), (True, 3), (False, 2), ("window", 1),
                                                  ("window", 2)])
def test_where_a_diverging_member_went_non_finite_is_its_single_runs(monkeypatch, host_flags, log_every):
    """A population keeps each member's first non-finite logged step (`FirstBad`: on the CPU by copying the rows
    that went bad, with flags on the device by a `where` on every row; on a GPU, in the window's slots of every
    logged step, `InWindow`); the stopped member's summary names the layer and the phase its single run names,
    also when that step was not logged (then, as a single run, from the values as they are)."""
    from core.training import population_step

    init = population_step.FirstBad.__init__

    def forced(self, size, device, on_host=None):
        init(self, size, device, on_host=host_flags)
    if host_flags == "window":
        in_window(monkeypatch)
    else:
        monkeypatch.setattr(population_step.FirstBad, "__init__", forced)
    cfgs = [BASE.replace(optimizer="sgd", lr=lr, loss="bce_with_logits", hidden=(32, 32), epochs=5, seed=s,
                         log_every=log_every, activation=act)
            for lr, s, act in ((0.05, 0, "relu"), (90.0, 1, "relu"), (0.01, 2, "relu"), (90.0, 2, "elu"))]
    members = check(cfgs, flush_every_steps=4)
    assert [m.result.status for m in members] == ["finished", "diverged", "finished", "diverged"]
    if log_every == 1:  # from the kept step: two different layers
        assert [members[k].result.summary["nonfinite_layer"] for k in (1, 3)] == ["fc1", "out"]


@pytest.mark.parametrize("host_flags", [True, False])
def test_first_bad_keeps_each_members_first_non_finite_step(host_flags):
    """`FirstBad.offer`, step by step: a member is caught at its first step with a non-finite logit, loss or
    gradient norm (the sum of its layers' squares overflowing counts too), its gradients and values of that step
    kept; later steps, bad or not, change nothing of it; members never bad keep nothing. Both ways of copying:
    rows picked on the host (CPU) and a `where` on every row (GPU)."""
    from core.training.population_step import FirstBad

    first = FirstBad(4, CPU, on_host=host_flags)
    history = []
    for step in range(1, 6):
        z = torch.zeros(4, 3)
        loss = torch.zeros(4)
        stats = torch.zeros(5, 4, 2)
        if step >= 2:
            z[1, 2] = math.nan  # member 1: logits from step 2 on
        if step == 3:
            loss[2] = math.inf  # member 2: its loss at step 3 only
        if step >= 4:
            stats[0, 2, 1] = math.inf  # ... then its gradient norm
            stats[0, 3] = 3e38  # member 3: each layer finite, their sum overflows
        grads, before, after = (torch.full((4, 6), float(10 * step + j)) for j in range(3))
        first.offer(step, z, loss, stats, grads, before, after)
        history.append((grads, before, after))
    assert first.caught_at() == [-1, 2, 3, 4]
    for k, step in ((1, 2), (2, 3), (3, 4)):
        for kept, now in zip(first.kept, history[step - 1]):
            assert torch.equal(kept[k], now[k]), (k, step)
    assert all(float(kept[0].abs().sum()) == 0 for kept in first.kept)


@pytest.mark.parametrize("host_flags", [True, False])
def test_first_bad_judges_float64_members_by_their_float32_loss_and_norm(host_flags):
    """As the flush does: a float64 loss past float32's range is non-finite as a metric, and so is a gradient norm
    whose float64 square sum is finite but whose root is not a float32 (the host's quick all-finite test must not
    pass such a step)."""
    from core.training.population_step import FirstBad

    first = FirstBad(3, CPU, on_host=host_flags)
    z, loss, stats = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), \
        torch.zeros(5, 3, 2, dtype=torch.float64)
    rows = torch.ones(3, 4, dtype=torch.float64)
    loss[1] = 1e39  # step 1: member 1's loss alone
    first.offer(1, z, loss, stats, rows, rows, rows)
    loss[1] = 0.0
    stats[0, 2, 0] = 1e78  # step 2: member 2's norm alone
    first.offer(2, z, loss, stats, rows, rows, rows)
    assert first.caught_at() == [-1, 1, 2]
    loss[0], stats[0, 0, 0] = 3e38, 9e76  # step 3: member 0's loss and norm (3e38) finite as float32, their sum not
    first.offer(3, z, loss, stats, rows, rows, rows)
    assert first.caught_at() == [-1, 1, 2]


@pytest.mark.parametrize("host_flags", [True, False])
def test_first_bad_catches_a_gradient_norm_that_overflows_float32_alone(host_flags):
    """A float32 member whose layers' squares are each finite but whose sum is not (its flush's gradient norm is
    inf), in a step where nothing else is wrong: the host's quick test, which sums every square in float64, must
    not pass it."""
    from core.training.population_step import FirstBad

    first = FirstBad(3, CPU, on_host=host_flags)
    z, loss, stats, rows = torch.zeros(3, 2), torch.zeros(3), torch.zeros(5, 3, 2), torch.ones(3, 4)
    first.offer(1, z, loss, stats, rows, rows, rows)
    stats[0, 1] = 2e38  # member 1: 2e38 + 2e38 in float32 is inf
    stats[0, 2, 0] = 1e37  # member 2: large, finite
    first.offer(2, z, loss, stats, rows, rows, rows)
    assert first.caught_at() == [-1, 2, -1]


def test_the_flushs_non_finite_rows_are_those_holding_a_non_finite_logit():
    """The flush clears rows with one sum; a row whose finite logits only add up past float32's range is not
    non-finite, and rows of NaN or infinities are, with or without such a row beside them."""
    from core.training.population_window import _nonfinite_rows

    z = torch.zeros(2, 3, 4)
    assert not _nonfinite_rows([z])[0].any()
    z[0, 1, :2] = 3e38  # finite, the sum overflows
    assert _nonfinite_rows([z])[0].tolist() == [[False] * 3, [False] * 3]
    z[1, 2, 3], z[1, 0, 0], z[0, 0, 1] = math.nan, -math.inf, math.inf
    assert _nonfinite_rows([z])[0].tolist() == [[True, False, False], [True, False, True]]
    z[0, 0, 0] = -math.inf  # +inf and -inf: a NaN sum
    assert _nonfinite_rows([z])[0][0, 0]
    clean = torch.zeros(2, 2, 4)  # blocks of a window: a clean one beside one with non-finite rows
    both = _nonfinite_rows([clean, z])
    assert both[0].tolist() == [[False] * 2] * 2 and both[1].tolist() == _nonfinite_rows([z])[0].tolist()
    assert _nonfinite_rows([]) == []


class _Plain:
    """A reporter without `should_stop_many`: asked one by one."""

    def __init__(self, stop: bool) -> None:
        self.stop = stop

    def should_stop(self) -> bool:
        return self.stop


class _Batched(_Plain):
    asked: list[int] = []

    @classmethod
    def should_stop_many(cls, reporters):
        cls.asked.append(len(reporters))
        return [r.stop for r in reporters]


class _Broken(_Plain):
    @classmethod
    def should_stop_many(cls, reporters):
        raise RuntimeError("down")


def test_poll_stops_asks_each_class_at_once_where_it_can():
    from core.training.population import poll_stops

    _Batched.asked = []
    reporters = [_Plain(True), _Batched(True), _Broken(True), _Batched(False), _Plain(False)]
    assert poll_stops(reporters) == [None, True, None, False, None]  # None: asked on its own
    assert _Batched.asked == [2] and poll_stops([]) == []


def test_members_writing_to_a_store_write_and_poll_in_one_transaction_and_query_a_flush(tmp_path):
    """A population of StoreReporters writes every member's rows in one transaction a flush and reads every cancel
    flag in one query; the member whose run was cancelled stops alone at the first flush, and a deleted run stops
    its member without failing the others."""
    from core.store.reporter import StoreReporter
    from core.training.population import train_population

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    cfgs = [BASE.replace(seed=s, lr=lr) for s in range(3) for lr in (0.01, 0.1)]
    ids = store.create_runs([(f"r{k}", c.to_dict()) for k, c in enumerate(cfgs)])
    store.request_cancel(ids[1])
    calls = []
    flags = store.cancel_flags

    def counted(run_ids):
        run_ids = list(run_ids)
        calls.append(len(run_ids))
        found = flags(run_ids)
        if len(calls) == 1:
            store.delete_run(ids[4])  # deleted after the first flush's poll: its next flush finds it gone
        return found
    store.cancel_flags = counted
    writes = []
    many = store.log_metrics_many
    store.log_metrics_many = lambda items: writes.append(len(items)) or many(items)
    store.log_metrics = None  # not called: every flush is one transaction for every member ...
    store.start_run = store.finish_run = None  # ... and so are the members' starts and ends
    results = train_population(cfgs, [StoreReporter(store, run_id) for run_id in ids], data=load_dataset(BASE),
                               flush_every_steps=3)
    assert [r.status for r in results] == ["finished", "cancelled", "finished", "finished", "cancelled",
                                           "finished"]
    assert calls[:2] == [6, 4] and len(calls) > 3  # a query a flush, of the live members' runs
    assert writes[:2] == [6, 5] and len(writes) == len(calls) + 1  # ... and a transaction (the last: no poll)
    runs = {r.id: r for r in store.get_runs(ids)}
    assert ids[4] not in runs and runs[ids[1]].status == "cancelled" and runs[ids[0]].status == "finished"
    assert runs[ids[1]].progress_step == 3  # stopped at the first flush
    store.close()


def test_diverging_members_stop_alone_among_members_batched_by_column_and_mask():
    """Members that go non-finite while others differ in what a column or a mask batches (no clipping next to
    clipping, SGD's momentum 0 next to 0.9, an output ReLU or none, SGD next to Adam): each stops as its single run
    does, where its single run says, and the others train on as theirs."""
    cfgs = [BASE.replace(optimizer=opt, lr=lr, loss="bce_with_logits", hidden=(32, 32), epochs=5, seed=s,
                         momentum=mom, grad_clip=clip, output_relu=out, activation=act)
            for opt, lr, s, mom, clip, out, act in (
                ("sgd", 0.05, 0, 0.9, 0.5, False, "relu"), ("sgd", 90.0, 1, 0.0, None, False, "relu"),
                ("adam", 0.01, 2, 0.0, 1.0, True, "relu"), ("sgd", 90.0, 2, 0.9, None, False, "elu"),
                ("sgd", 0.01, 3, 0.0, None, True, "elu"))]
    members = check(cfgs, flush_every_steps=4)
    assert [m.result.status for m in members] == ["finished", "diverged", "finished", "diverged", "finished"]
    assert all("nonfinite_layer" in members[k].result.summary for k in (1, 3))
