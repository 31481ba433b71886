"""Fine-tuning on the shop's judgments: the judged pairs' texts, read from the index, train a
cross-encoder or a new encoder version (the training itself: esrank.models.tuning)."""

from __future__ import annotations

from pathlib import Path

from esrank.catalogue.lookup import fetch_texts
from esrank.engine import Engine
from esrank.judgments.lists import read_judgments
from esrank.models.encoder import model_dir
from esrank.models.tuning import train_cross_encoder, train_encoder


def judged_texts(engine: Engine, index: str, judgments: Path, fmt: str | None = None
                 ) -> tuple[list[str], list[str], list[int]]:
    """Queries, document texts (title + short description) and grades of the judged pairs
    whose documents the index holds: what fine-tuning reads."""
    judged = read_judgments(judgments, fmt)
    texts = fetch_texts(engine, index, [j.doc_id for j in judged])
    pairs = [j for j in judged if j.doc_id in texts]
    return [j.query for j in pairs], [texts[j.doc_id] for j in pairs], [j.grade for j in pairs]


def tune_cross_encoder(app, judgments: Path, output: Path, *, fmt: str | None = None,
                       epochs: int = 2, batch_size: int = 16, progress: bool = True) -> dict:
    """Fine-tune the configured encoder's model as a cross-encoder on `app`'s judged pairs."""
    return train_cross_encoder(model_dir(app.settings.encoder.model),
                               *judged_texts(app.engine, app.settings.index, judgments, fmt),
                               output, epochs=epochs, batch_size=batch_size, progress=progress)


def tune_encoder(app, judgments: Path, output: Path, *, fmt: str | None = None,
                 epochs: int = 1, batch_size: int = 32, progress: bool = True) -> dict:
    """Fine-tune the configured encoder on judged pairs: a new encoder version."""
    return train_encoder(model_dir(app.settings.encoder.model),
                         *judged_texts(app.engine, app.settings.index, judgments, fmt), output,
                         epochs=epochs, batch_size=batch_size, progress=progress)
