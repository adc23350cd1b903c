"""Damage segmentation studio: the dashboard's entry point.

    make run            # or: streamlit run streamlit_app.py

Pages live in pages/; each is thin and calls into the `unet` package.
"""

import streamlit as st

from pages.common import sidebar_model_picker


@st.cache_resource
def _icon():
    """The tab icon, drawn here: a material icon as page icon is fetched from a font server,
    which fails offline (and leaks each visit to it)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((2, 2, 62, 62), radius=12, fill=(96, 96, 104))
    draw.line([(14, 6), (26, 24), (20, 34), (36, 46), (32, 58)], fill=(255, 64, 48), width=6, joint="curve")
    draw.line([(26, 24), (50, 20)], fill=(255, 64, 48), width=4)
    return img


st.set_page_config(page_title="Damage segmentation studio", page_icon=_icon(), layout="wide")

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
