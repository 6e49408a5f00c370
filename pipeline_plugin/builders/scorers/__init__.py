"""Generated scorers for no-code packaging. Each file here is copied into the image as score.py
(with pipeline_plugin_scorer.json beside it); they are Azure-style entry scripts, not imported here."""
