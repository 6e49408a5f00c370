"""Image builders: the model image (docker.py) and the local base image (base_image.py)."""
