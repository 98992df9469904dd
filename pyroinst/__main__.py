"""``python -m pyroinst``: the pyroinst command."""

from pyroinst.cli import main

main()
