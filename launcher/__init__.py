"""Grid-style launcher: job specs -> runs -> experiments on nodes.

Never imports torch or boto3 at module level: the CLI must start fast on any laptop.
"""

__version__ = "0.1.0"
