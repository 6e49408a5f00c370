"""pipeline-plugin: continuous deployment of machine-learning models from registry events."""

__version__ = "0.1.0"
