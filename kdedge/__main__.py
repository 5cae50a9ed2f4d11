"""`python -m kdedge ...` is the `kdedge` command."""

from kdedge.cli import main

if __name__ == "__main__":
    main()
