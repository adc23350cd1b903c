"""Damage segmentation studio: the dashboard's entry point.

    make run            # or: streamlit run streamlit_app.py

Pages live in pages/; each is thin and calls into the `unet` package.
"""

import streamlit as st

from pages.common import sidebar_model_picker

st.set_page_config(page_title="Damage segmentation studio", page_icon=":material/construction:", layout="wide")

page = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/detect.py", title="Detect", icon=":material/search:"),
        st.Page("pages/survey.py", title="Survey", icon=":material/map:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:"),
    ]
)
sidebar_model_picker()
page.run()
