"""Lossboard's dashboard: `streamlit run app.py`.

The router only: page set-up, the run store opened once per server (the database the command line uses:
`LOSSBOARD_DB`, else experiments.db), and the pages. Each page takes the store from
`st.session_state["app_store"]`.
"""

import math
import time

import streamlit as st

from core import PROJECT_ROOT
from core.jobs import runner
from core.store import Store, default_url

# The icon ships with the app: a ":material/...:" page icon makes the browser fetch it from Google's font servers.
REFRESH_EVERY_S = 3.0  # how often page runs look for runs whose process died

st.set_page_config(page_title="Lossboard", page_icon=str(PROJECT_ROOT / "assets" / "lossboard-icon.png"), layout="wide")


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Store:
    return Store(url)


# The navigation first, so that even the page saying the store cannot be opened has the app's own menu.
pages = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", url_path="", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/play_circle:", url_path="train"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:", url_path="runs"),
    st.Page("pages/compare.py", title="Compare", icon=":material/stacked_line_chart:", url_path="compare"),
    st.Page("pages/studies.py", title="Studies", icon=":material/science:", url_path="studies"),
]
page = st.navigation(pages, position="top")
try:
    store = open_store(default_url())
except ValueError as exc:  # no server there, not a database, no driver: said once, not as a traceback
    st.error(f"Lossboard cannot open its run store ({exc}). Point LOSSBOARD_DB at a SQLite file or a database "
             "server, then reload.", icon=":material/database:")
    st.stop()
st.session_state["app_store"] = store
# Runs whose process died become "interrupted": at the session's first page and then at most every few seconds of
# page runs (one query of this host's running runs), so that Overview and Runs do not show a dead run running
if time.monotonic() - st.session_state.get("app_refreshed", -math.inf) >= REFRESH_EVERY_S:
    runner.refresh(store)
    st.session_state["app_refreshed"] = time.monotonic()

# Streamlit forgets a widget's value when its page is not shown; the train form and the compare settings
# should survive a visit to another page, so their values are re-saved on every run.
KEPT = ("train_field_", "train_preset", "train_name", "compare_opt_")
for key in [k for k in st.session_state if str(k).startswith(KEPT)]:
    st.session_state[key] = st.session_state[key]

# Until a first session has run this file, Streamlit treats pages/ as an old-style pages folder and runs a
# requested page directly; such a page sends the request here, and it goes on to where it was meant to go.
goto = st.session_state.pop("app_goto", None)
if goto:
    st.switch_page(goto[0], query_params=goto[1])
page.run()
