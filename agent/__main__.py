"""``python -m agent`` is the ``fieldcap`` command."""

from agent.cli import main

main()
