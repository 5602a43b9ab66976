"""Training on a CUDA GPU: the single-run trainer gives the CPU's numbers, every population member equals its own
single run on the GPU, neither trainer synchronises with the host once per step, and the CLI trains, stores and
studies on `cuda`. Skipped where torch sees no CUDA GPU (CI's machines have none); on a GPU machine run
`bash scripts/cuda_check.sh`, which runs these tests and the GPU benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_population import BASE, DIFFERENCES, MIXED, MIXED_MORE, assert_same_run, check, close, population, single

from core.experiment.data import load_dataset
from core.training.population import train_population
from core.training.reporting import MemoryReporter
from core.training.trainer import train

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU"),
              pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")]
CUDA = torch.device("cuda")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cfg", [MIXED[0], MIXED[1], MIXED[4].replace(hidden=(6, 5), grad_clip=0.5)],
                         ids=["relu-bce", "elu-bn-logits", "two-layers-clip"])
def test_cuda_training_gives_the_cpu_numbers(cfg):
    """float64 training from the same initial weights in the same batch order; the metrics are float32 means,
    whose reduction order differs between the devices (a val_loss was seen 1.1e-7 apart, relative)."""
    data = load_dataset(cfg)
    assert_same_run(single(cfg, data), single(cfg, data, device=CUDA), rel=1e-6, abs_=1e-8)


@pytest.mark.parametrize("field", DIFFERENCES)
def test_each_batchable_difference_alone_equals_single_runs_on_cuda(field):
    check([BASE.replace(**change) for change in DIFFERENCES[field]], device=CUDA)


@pytest.mark.parametrize("options", [{}, {"optimizer": "sgd", "momentum": 0.9}, {"optimizer": "adamw"},
                                     {"hidden": (6, 5), "grad_clip": 0.5}, {"diagnostics": "loss"}])
def test_every_difference_mixed_equals_single_runs_on_cuda(options):
    check([cfg.replace(**options) for cfg in MIXED], device=CUDA)


def test_the_fields_batched_later_mixed_equal_single_runs_on_cuda():
    """BatchNorm's eps and momentum, ELU's alpha, the hidden biases' start, SGD's momentum, clipping, the output
    ReLU and the optimizer, each differing among the members."""
    check([cfg.replace(optimizer=opt) for cfg, opt in zip(MIXED_MORE, ["sgd", "adam", "sgd", "adamw", "sgd"])],
          device=CUDA)


def test_float32_members_match_their_single_runs_on_cuda():
    cfgs = [cfg.replace(dtype="float32", epochs=2) for cfg in MIXED]
    data = load_dataset(cfgs[0])
    for cfg, member in zip(cfgs, population(cfgs, data, device=CUDA)):
        one = single(cfg, data, device=CUDA)
        assert member.keys() == one.keys() and set(member.result.summary) == set(one.result.summary)
        assert close(one.series("train_loss"), member.series("train_loss"), 1e-3, 1e-5)
        assert close(one.series("val_loss"), member.series("val_loss"), 1e-2, 1e-4)


@pytest.mark.parametrize("in_window", [None, False], ids=["in-window", "at-step"])
def test_a_diverging_member_stops_alone_on_cuda(monkeypatch, in_window):
    """A GPU's way (`InWindow`: the first non-finite step read from the window's slots), and the way taken when
    a population's rows are too large for the slots (`AtStep`, `FirstBad` with its flags on the device)."""
    from core.training import population_step

    monkeypatch.setattr(population_step, "IN_WINDOW", in_window)
    cfgs = [BASE.replace(optimizer="sgd", lr=lr, loss="bce_with_logits", hidden=(32, 32), epochs=5, seed=s)
            for lr, s in ((0.05, 0), (90.0, 1), (0.01, 2))]
    members = check(cfgs, device=CUDA, flush_every_steps=4)
    assert [m.result.status for m in members] == ["finished", "diverged", "finished"]


def syncs(fn) -> int:
    """How many synchronising CUDA operations `fn` made (torch's sync debug mode, one warning each)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_the_sync_counter_counts():
    assert syncs(lambda: [torch.ones(1, device=CUDA).item() for _ in range(5)]) >= 5


@pytest.mark.parametrize("diagnostics", ["full", "loss"])
def test_no_host_sync_per_step(diagnostics):
    """Four times the steps (a quarter of the batch size) over the same epochs and flushes: the same number of
    synchronisations, for the single-run trainer and for a population."""
    base = BASE.replace(dtype="float32", n_samples=640, epochs=2, diagnostics=diagnostics, log_every=1)
    never = dict(flush_every_s=1e9, flush_every_steps=10**6)

    def one(batch: int) -> int:
        cfg = base.replace(batch_size=batch)
        data = load_dataset(cfg)
        return syncs(lambda: train(cfg, MemoryReporter(), data=data, device=CUDA, **never))

    def pop(batch: int) -> int:
        cfgs = [base.replace(batch_size=batch, seed=s, lr=lr, batchnorm=s % 2 == 1)
                for s, lr in enumerate((0.01, 0.03, 0.1, 0.3))]
        # and members that differ in what a column or a mask batches: clipping, SGD's momentum, the output ReLU
        cfgs += [base.replace(batch_size=batch, seed=s, optimizer="sgd", momentum=m, grad_clip=clip, output_relu=out)
                 for s, m, clip, out in [(4, 0.0, None, False), (5, 0.9, 0.5, True)]]
        data = load_dataset(cfgs[0])
        return syncs(lambda: train_population(cfgs, [MemoryReporter() for _ in cfgs], data=data, device=CUDA,
                                              **never))

    one(64), pop(64)  # warm-up: first-use syncs (allocator, kernels) are not per step
    assert one(16) == one(64), (one(16), one(64))
    assert pop(16) == pop(64), (pop(16), pop(64))


def core_cli(*args: str, db: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "core", "--db", f"sqlite:///{db}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_cli_trains_and_studies_on_cuda(tmp_path):
    db = tmp_path / "gpu.db"
    got = core_cli("train", "--preset", "article-fixed", "--epochs", "20", "--device", "cuda", "--json", db=db)
    assert got["status"] == "finished" and got["device"].startswith("cuda"), got
    shown = core_cli("show", str(got["id"]), "--json", db=db)
    assert shown["device"].startswith("cuda") and shown["summary"]["final_train_loss"] < 0.69
    study = core_cli("study", "--study", "bn-act-loss", "--epochs", "10", "--device", "cuda", "--json", db=db)
    assert study["runs"] == study["expected_runs"] == 24 and study["status_counts"] == {"finished": 24}, study
    assert core_cli("show", str(got["id"] + 24), "--json", db=db)["device"].startswith("cuda")
