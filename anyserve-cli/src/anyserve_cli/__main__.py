"""``python -m anyserve_cli``: the ``anyserve`` console script without the script."""

from anyserve_cli.main import main

if __name__ == "__main__":
    main()
