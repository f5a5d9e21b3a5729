"""Import the run records written beside shipped model versions, so a fresh clone shows them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy.orm import Session

from app.runs.registry import import_record
from app.store.layout import complete_versions, model_names, version_dir
from app.store.manifest import RUN_RECORD

log = logging.getLogger(__name__)


def import_shipped_runs(session: Session, model_dir: Path) -> int:
    imported = 0
    for name in model_names(model_dir):
        for version in complete_versions(model_dir, name):
            path = version_dir(model_dir, name, version) / RUN_RECORD
            if not path.is_file():
                continue
            try:
                imported += import_record(session, json.loads(path.read_text()))
            except Exception as error:  # a bad record must not stop the service from starting
                session.rollback()
                log.error("could not import %s: %s", path, error)
    return imported
