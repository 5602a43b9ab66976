"""Overview: what Lossboard is for, where things stand, one-click article presets, and why clamped BCE misleads."""

import streamlit as st

from core.experiment.config import preset
from core.jobs import runner
from core.presentation import forms, run_tables
from core.store import Store

if "app_store" not in st.session_state:  # the server's first request came here, before app.py ran
    st.session_state["app_goto"] = ("pages/overview.py", st.query_params.to_dict())
    st.switch_page("app.py")
store: Store = st.session_state["app_store"]


def launch_preset(name: str) -> None:
    run_id = runner.launch(store, preset(name), name=name)
    st.session_state.setdefault("train_launched", []).insert(0, run_id)
    st.switch_page("pages/train.py")


st.title("Lossboard")
st.markdown(
    "Train small PyTorch binary classifiers and see what their loss is really doing. Launch a variant, watch it "
    "learn, then lay runs side by side to find where `Sigmoid + BCELoss` saturates, where gradients vanish, and "
    "which fix works.")

counts = store.counts()
total = sum(counts.values())

if total == 0:
    st.info(
        "**No runs yet — start here.** Launch one of the article's presets below: each trains on the CPU in a few "
        "seconds, and you can watch it on the Train page. Or configure your own run on **Train**, or from a "
        "terminal: `python -m core train --preset article-example`.", icon=":material/waving_hand:")
else:
    stopped = counts["failed"] + counts["cancelled"] + counts["interrupted"]
    cols = st.columns(5)
    cols[0].metric("Runs", total)
    cols[1].metric("Running", counts["running"])
    cols[2].metric("Finished", counts["finished"])
    cols[3].metric("Diverged", counts["diverged"])
    cols[4].metric("Failed or stopped", stopped)

    st.subheader("Latest runs")
    latest = run_tables.in_percent(run_tables.runs_table(store.list_runs(limit=6)))
    st.dataframe(
        latest[["name", "status", "created", "duration_s", "dataset", "loss", "final_val_loss", "final_val_acc"]],
        column_config={
            "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm",
                                                       timezone=st.context.timezone),  # the browser's, as on Runs
            "duration_s": st.column_config.NumberColumn("duration", format="%.1f s"),
            "final_val_loss": st.column_config.NumberColumn("final val loss", format="%.4f"),
            "final_val_acc": st.column_config.NumberColumn("val acc", format=run_tables.PERCENT_FORMAT),
        }, placeholder="–")
    left, right = st.columns(2)
    left.page_link("pages/runs.py", label="All runs: filter, edit, open one", icon=":material/table_rows:")
    right.page_link("pages/compare.py", label="Compare runs side by side", icon=":material/stacked_line_chart:")

st.subheader("The article's presets, one click each")
st.caption("Each starts a real training run in the background and opens the Train page to watch it.")
for col, name in zip(st.columns(len(forms.ARTICLE_PRESETS)), forms.ARTICLE_PRESETS):
    with col.container(border=True, height="stretch"):
        st.markdown(f"**{name}**")
        st.caption(forms.PRESET_NOTES.get(name, ""))
        if st.button("Launch", key=f"overview_launch_{name}", icon=":material/play_arrow:",
                     type="primary" if total == 0 else "secondary"):
            launch_preset(name)

st.subheader("Clamped BCE versus logits")
st.markdown("""
On paper, a sigmoid followed by binary cross-entropy *is* `BCEWithLogitsLoss`. In floating point they part ways,
and the difference decides whether a model can correct its worst mistakes.

- **The sigmoid runs out of precision.** In float32, `sigmoid(z)` is exactly 1.0 from about z = 16.6 and exactly
  0.0 below about z = −88.7; in float16 it hits 1.0 near 8.3, in bfloat16 near 6.2. `BCELoss` then has to take
  log 0, and it clamps that log at −100.
- **So a confident mistake costs 100 and teaches nothing.** A negative sample at logit 17 gets loss 100.0 and
  gradient 0.0: the sample that most needs correcting is frozen. `BCEWithLogitsLoss` charges 17.0 and keeps the
  gradient at 1.0; its gradient is always `sigmoid(z) − y`.
- **Gradients fade before they vanish.** Below a logit of about −27.6, `BCELoss`'s backward is floored at 1e-12,
  so a positive at logit −30 gets gradient −0.094 instead of −1.
- **A ReLU right before the sigmoid** makes every probability ≥ 0.5: negatives can never be predicted, and on
  balanced data the loss cannot fall below about 0.35 (ln 2 for every negative, where the ReLU passes no gradient).
- **Neither is foolproof.** An infinite logit makes `BCEWithLogitsLoss` NaN where the clamped loss stays finite,
  which hides the bug instead of fixing it.
""")
with st.expander("The numbers (torch, float32, one element)"):
    st.markdown("""
| logit, target | Sigmoid + BCELoss | BCEWithLogitsLoss |
|---|---|---|
| 0, either | 0.6931, gradient ±0.5 | the same |
| 16, 0 | 15.94 (sigmoid is 1 − 2⁻²³) | 16.0 |
| 17, 0 | **100.0, gradient 0** (sigmoid rounds to 1) | 17.0, gradient 1 |
| −30, 1 | 30.0, gradient −0.094 | 30.0, gradient −1 |
| −89, 1 | **100.0, gradient 0** (sigmoid underflows to 0) | 89.0, gradient −1 |
| [∞, 1], [1, 0] | 0.6566 | NaN |
""")
st.markdown("""
Every run here logs what the loss hides: **`clamp_frac`** (outputs whose sigmoid is exactly 0 or 1),
**`clamp_wrong_frac`** (those on the wrong side: loss 100, no gradient), **`grad_vanish_frac`** (samples getting
under 1% of the exact gradient) and **`train_loss_logits`**, the exact loss on the same outputs. The gap between
`train_loss` and `train_loss_logits` is what clamping did. Open a run on **Runs** to read its findings in words.
""")
