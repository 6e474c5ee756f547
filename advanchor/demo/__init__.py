"""A local Gradio app that shows one prompt through a base model and the same model with erasers loaded.

`python -m advanchor.demo --eraser outputs/<run>` starts it on the toy model. gradio is an optional
dependency (`pip install 'advanchor[demo]'`), so nothing here imports it: `advanchor.demo.app` does.
"""
