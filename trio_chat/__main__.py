"""`python -m trio_chat`: the command-line entry point."""

from trio_chat.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
