"""``python -m app worker`` runs the service; ``python -m app --help`` lists the commands."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from app.exceptions import SettingsError
from app.settings import Settings, load_settings

#: LOG_LEVEL uses the usual names; Faust's --loglevel spells two of them short.
FAUST_LOG_LEVELS = {"warning": "warn", "critical": "crit"}


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"payment-service: invalid configuration: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    if "worker" in sys.argv[1:]:
        _count_in_files(Path(settings.data_dir) / "metrics")
    # After _count_in_files: prometheus-client reads it.
    from app.kafka.faust_patches import FaustInternalsChanged
    from app.ops.log_format import log_before_setup
    from app.service import create_app

    log_before_setup(settings.log_format, settings.log_level)
    _warn_of_allowed_insecurity(settings)
    if "worker" in sys.argv[1:]:
        _log_feature_flags(settings)

    if "worker" in sys.argv[1:] and settings.log_format == "json":
        # Faust prints a banner, a text table, on stdout: not a log line.
        sys.argv[1:1] = ["--quiet"]
    if not any(arg in ("-l", "--loglevel") or arg.startswith("--loglevel=") for arg in sys.argv):
        sys.argv[1:1] = ["--loglevel", FAUST_LOG_LEVELS.get(settings.log_level, settings.log_level)]
    try:
        app = create_app(settings)
    except FaustInternalsChanged as exc:
        print(f"payment-service: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if "worker" in sys.argv[1:]:
        from app import collector

        collector.tune()  # the app is built: freeze it (app/collector.py)
    app.main()


def _warn_of_allowed_insecurity(settings: Settings) -> None:
    """Say at start which unsafe settings ALLOW_INSECURE lets production run with."""
    allowed = [name for name in settings.unsafe_settings if name in settings.allow_insecure]
    if settings.node_env == "production" and allowed:
        logging.getLogger("app").warning(
            "ALLOW_INSECURE: running in production with %s as they are (a trusted network only)",
            ", ".join(allowed),
        )


def _log_feature_flags(settings: Settings) -> None:
    """Say at a worker's start which of the rollout's switches are on (a warning for each off)."""
    log = logging.getLogger("app")
    log.info(
        "feature flags: STAGING_ENABLED=%s WEBHOOKS_ENABLED=%s",
        str(settings.staging_enabled).lower(),
        str(settings.webhooks_enabled).lower(),
    )
    if not settings.staging_enabled:
        log.warning(
            "STAGING_ENABLED=false: the staging poller does not run; staged rows wait "
            "unprocessed until a worker runs with STAGING_ENABLED=true"
        )
    if not settings.webhooks_enabled:
        log.warning(
            "WEBHOOKS_ENABLED=false: every webhook is answered 503 with Retry-After and "
            "nothing is recorded; set WEBHOOKS_ENABLED=true to take them"
        )


def _count_in_files(folder: Path) -> None:
    """Metrics of the worker and its fronts in ``folder``, emptied (see app/instruments.py)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


if __name__ == "__main__":
    main()
