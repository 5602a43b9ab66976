"""How runs are shown: Plotly figures (`charts`, `chart_data`), the tables, forms, URLs and words the pages show
(`run_tables`, `forms`, `urls`, `study_views`, `formatting`), and files (`export`, `images`, `offline_html`,
`report`). Pure functions of store records and frames; no Streamlit and no torch."""
