"""The ``launch`` command line: click commands only (parse, call the library, print).

``app`` holds the group and the one-line error edge; each other module holds the commands of one
area, and ``output`` the table and formatting helpers they share.
"""

from launcher.cli.app import cli, main

__all__ = ["cli", "main"]
