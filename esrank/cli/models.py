"""esrank encoder/cross-encoder: the sentence encoder (its cache, ONNX export, fine-tuning) and
the cross-encoder rerank stage."""

from __future__ import annotations

from pathlib import Path

import click

from esrank.cli.common import FORMATS, app_of, emit, options, settings_of


@click.group()
def encoder() -> None:
    """The sentence encoder: which one runs, its embedding cache, the ONNX export, fine-tuning."""


@encoder.command("info")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def encoder_info(ctx: click.Context, as_json: bool) -> None:
    """The encoder every command and the sidecar use (ESRANK_ENCODER__MODEL, __BACKEND,
    __PRECISION): backend, device and precision it resolved to, and the backends installed.
    The log (-v) says which ONNX Runtime provider runs it, and why the CPU when it is."""
    from esrank.app import encoder_info as describe_encoder

    data = describe_encoder(settings_of(ctx))
    emit(data, as_json, "\n".join(f"{k:18} {v}" for k, v in data.items()))


@encoder.command("cache")
@click.option("--clear", is_flag=True, help="Remove every cached vector.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def encoder_cache(ctx: click.Context, clear: bool, as_json: bool) -> None:
    """The embedding cache (ESRANK_HOME/cache): vectors per encoder and bytes on disk.

    `esrank index` takes a product text's vector from it when the same encoder embedded the
    same text before, so re-indexing an unchanged catalogue costs bulk time only. Turn it off
    with ESRANK_ENCODER__CACHE=false."""
    from esrank.app import embedding_cache

    data = embedding_cache(settings_of(ctx), clear=clear)
    entries = "".join(f"\n  {key}: {n:,} vectors" for key, n in data["entries"].items())
    cleared = f"\ncleared {data['cleared']:,} vectors" if clear else ""
    emit(data, as_json, f"{data['path']} ({data['bytes'] / 2**20:.1f} MB){entries or ' empty'}"
         + cleared)


@encoder.command("export-onnx")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def encoder_export_onnx(ctx: click.Context, output: Path, as_json: bool) -> None:
    """Export the encoder to ONNX (no torch needed) and check it: every test sentence's
    cosine to the reference (torch when installed, else the NumPy backend) must be ≥ 0.9999."""
    from esrank.models.encoder import model_dir
    from esrank.models.onnx_check import export_and_check

    data = export_and_check(model_dir(settings_of(ctx).encoder.model), output)
    emit(data, as_json, f"exported {output} ({data['bytes'] / 1e6:.1f} MB); min cosine vs "
         f"{data['reference']}: {data['min_cosine']:.7f}")


def _tuning_options(folder: str, epochs: int, batch_size: int, min_batch: int = 1):
    """The options of a fine-tuning command: judgments in, a model `folder` out."""
    return options(
        click.option("--judgments", "judgments_file", required=True,
                     type=click.Path(path_type=Path)),
        click.option("--format", "fmt", type=FORMATS, help="Judgment format (default: extension)."),
        click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
                     help=f"Model folder ({folder})."),
        click.option("--epochs", default=epochs, show_default=True, type=click.IntRange(min=1)),
        click.option("--batch-size", default=batch_size, show_default=True,
                     type=click.IntRange(min=min_batch)),
        click.option("--json", "as_json", is_flag=True),
        click.pass_context)


@encoder.command("train")
@_tuning_options("BertModel + tokenizer + pooling config + meta.json", epochs=1, batch_size=32,
                 min_batch=2)  # in-batch negatives need a second query
def encoder_train(ctx: click.Context, judgments_file: Path, fmt: str | None, output: Path,
                  epochs: int, batch_size: int, as_json: bool) -> None:
    """Fine-tune the encoder (every layer) on judged pairs: a new encoder version.

    Each query is pulled towards its docs graded 2 or more and away from the batch's other
    docs and one of its docs graded 0. Documents are read from the index (title + short
    description). Needs torch (pip install 'esrank[torch]'); running it does not. To use it,
    set ESRANK_ENCODER__MODEL to the folder and run `esrank index` (it re-embeds the
    catalogue: the index records its encoder), then log and train again: the cosine
    features change. Measure it on queries it never saw first: bench/encoder_tuning.py.
    """
    from esrank.learn.tuning import tune_encoder

    meta = tune_encoder(app_of(ctx), judgments_file, output, fmt=fmt, epochs=epochs,
                                     batch_size=batch_size, progress=not as_json)
    emit(meta, as_json, f"trained on {meta['examples']} examples of {meta['queries']} queries "
         f"in {meta['seconds']}s (loss {meta['loss_first_epoch']} -> "
         f"{meta['loss_last_epoch']}) -> {output}")


@click.group("cross-encoder")
def cross_encoder() -> None:
    """The cross-encoder rerank stage: train one from judgments."""


@cross_encoder.command("train")
@_tuning_options("BertForSequenceClassification + tokenizer + meta.json", epochs=2,
                 batch_size=16)
def cross_encoder_train(ctx: click.Context, judgments_file: Path, fmt: str | None, output: Path,
                        epochs: int, batch_size: int, as_json: bool) -> None:
    """Fine-tune the packaged MiniLM (every layer) as a cross-encoder on judged pairs.

    Documents are read from the index (title + short description). Needs torch
    (pip install 'esrank[torch]'); serving it does not (ONNX Runtime). Evaluate it on queries
    it was not trained on: bench/relevance.py does, per CV fold.
    """
    from esrank.learn.tuning import tune_cross_encoder

    meta = tune_cross_encoder(app_of(ctx), judgments_file, output, fmt=fmt, epochs=epochs,
                                           batch_size=batch_size, progress=not as_json)
    emit(meta, as_json, f"trained on {meta['pairs']} pairs in {meta['seconds']}s "
         f"(loss {meta['loss_first_epoch']} -> {meta['loss_last_epoch']}) -> {output}")


COMMANDS = (encoder, cross_encoder)
