"""Wire the registry together from settings: SQL store, object store, server."""
from __future__ import annotations

from lambdascope import config, logs, server
from lambdascope.storage import db
from lambdascope.storage.objects import open_store
from services.registry.servicer import binding
from services.registry.store import RegistryStore


def start(settings: config.Settings) -> server.RunningServer:
    store = RegistryStore(db.engine(settings.database))
    objects = open_store(settings.objects_dir)
    return server.start(settings, [binding(store, objects, settings.data_dir / "staging")])


def main(argv: list[str] | None = None) -> None:
    args = server.arg_parser("registry").parse_args(argv)
    settings = config.load("registry", **vars(args))
    logs.configure("registry", settings.log_level)
    server.serve_forever(start(settings), settings)

