"""The browser chat UI that `zhllama webui` runs (gradio, the `webui` extra); see `app.build_ui`."""
