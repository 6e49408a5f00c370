"""run() raises: the client gets 500 with the request id; the log gets the traceback."""


def init():
    pass


def run(raw_data):
    raise ValueError("secret detail that must stay in the log")
