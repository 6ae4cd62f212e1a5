"""``python -m app worker`` runs the service; ``python -m app --help`` lists the commands."""

from __future__ import annotations

import sys

from app.exceptions import SettingsError
from app.service import create_app
from app.settings import load_settings

#: LOG_LEVEL uses the usual names; Faust's --loglevel spells two of them short.
FAUST_LOG_LEVELS = {"warning": "warn", "critical": "crit"}


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"payment-service: invalid configuration: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    if not any(arg in ("-l", "--loglevel") or arg.startswith("--loglevel=") for arg in sys.argv):
        sys.argv[1:1] = ["--loglevel", FAUST_LOG_LEVELS.get(settings.log_level, settings.log_level)]
    create_app(settings).main()


if __name__ == "__main__":
    main()
