"""What runs inside CI systems: ``output`` (outputs, summaries and annotations in each system's own
format) and ``deployments`` (the CI system's own deployment records). ``deployments`` reports its
problems through ``output``; ``output`` imports nothing of this package."""
