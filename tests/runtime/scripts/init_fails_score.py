"""init() raises: the runtime logs it and exits with code 3 (as Azure's server does)."""


def init():
    raise RuntimeError("model file is corrupt")


def run(raw_data):
    return raw_data
