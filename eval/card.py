"""``python -m eval.card RUN``: a results card for a training run, ``card.md`` and ``card.html`` in the run folder.

Written at the end of every run (train/checkpointer.py) and again from a run folder at any time, from what the run
left: ``metrics.jsonl`` (its options, hardware, losses, rates, evaluations), ``checkpoints/best.json`` and the
shards' manifests. It holds the recipe and every option with where its value came from (flag, recipe, default),
the recipe's published numbers next to this run's best and last evaluation, plots (loss, learning rate per
parameter group, logit scale, validation R@1 / MdR / MnR over steps), clips/s, hardware, precision, padding
rule, and the shards with their manifests' totals. The HTML inlines its images, so it survives being copied alone.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import statistics
import sys

from runtime.cli import HelpFormatter
from runtime.run_folder import METRICS_NAME, best_record, checkpoints_of, last_per_step
from shards.manifest import MANIFEST_NAME, read_manifest
from shards.storage import Store

PLOTS = ("loss", "learning_rate", "logit_scale", "validation")
METRICS = ("R1", "R5", "R10", "MdR", "MnR")


def _plots(train: list[dict], evals: list[dict]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def figure_png(draw) -> bytes:  # noqa: ANN001
        figure, axis = plt.subplots(figsize=(6, 3.4))
        draw(axis)
        axis.set_xlabel("step")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        return buffer.getvalue()

    steps = [r["step"] for r in train]

    def loss(axis) -> None:  # noqa: ANN001
        axis.plot(steps, [r["loss"] for r in train], lw=1)
        axis.set(ylabel="loss", title="training loss")

    def rates(axis) -> None:  # noqa: ANN001
        names = sorted({name for r in train for name in r.get("lr_groups", {"all": 0})})
        for name in names:
            axis.plot(steps, [r.get("lr_groups", {}).get(name, r["lr"]) for r in train], lw=1, label=name)
        axis.set(ylabel="learning rate", title="learning rate per parameter group", yscale="log" if any(r["lr"] > 0 for r in train) else "linear")
        axis.legend(fontsize=7)

    def scale(axis) -> None:  # noqa: ANN001
        axis.plot(steps, [r["logit_scale"] for r in train], lw=1)
        axis.set(ylabel="logit scale (exp)", title="CLIP's temperature")

    def validation(axis) -> None:  # noqa: ANN001
        eval_steps = [r["step"] for r in evals]
        for direction in ("t2v", "v2t"):
            axis.plot(eval_steps, [r[direction]["R1"] for r in evals], marker="o", label=f"{direction} R@1")
        twin = axis.twinx()
        for direction in ("t2v", "v2t"):
            twin.plot(eval_steps, [r[direction]["MnR"] for r in evals], ls="--", label=f"{direction} MnR")
            twin.plot(eval_steps, [r[direction]["MdR"] for r in evals], ls=":", label=f"{direction} MdR")
        axis.set(ylabel="R@1 (%)", title="validation")
        twin.set_ylabel("rank")
        axis.legend(loc="upper left", fontsize=7)
        twin.legend(loc="upper right", fontsize=7)

    drawn = {"loss": figure_png(loss), "learning_rate": figure_png(rates), "logit_scale": figure_png(scale)}
    if evals:
        drawn["validation"] = figure_png(validation)
    return drawn


def _manifest_totals(location: str | None) -> dict | None:
    if not location or location.endswith(".tar") or "{" in location:
        return None
    try:
        store = Store(location)
        if not store.exists(MANIFEST_NAME):
            return None
        manifest = read_manifest(store)
    except OSError:
        return None
    return {"samples": manifest.get("num_samples"), "captions": manifest.get("num_captions"), "failures": manifest.get("num_failures"),
            "shards": len(manifest.get("shards", [])), "splits": manifest.get("splits")}  # fmt: skip


def _training_sources(started: dict) -> dict[str, tuple]:
    """One entry per training source, as the run recorded them (a mixture's ``A::B`` has several, each with its weight)."""
    sources = started.get("train_sources") or [[started["config"].get("train_shards"), 1.0]]
    if len(sources) == 1:
        return {"train": (sources[0][0], _manifest_totals(sources[0][0]))}
    return {f"train source {i + 1} (weight {weight:g})": (location, _manifest_totals(location)) for i, (location, weight) in enumerate(sources)}


def card_contents(run: str) -> dict:
    """Everything the card shows, read from the run folder (the two renderers only lay it out)."""
    store = Store(run)
    if not store.exists(METRICS_NAME):
        raise ValueError(f"{store.url_of(METRICS_NAME)}: no metrics.jsonl; is {run} a training run folder?")
    records = [json.loads(line) for line in store.read_bytes(METRICS_NAME).decode("utf-8").splitlines() if line.strip()]
    configs = [r for r in records if r["kind"] == "config"]
    if not configs:
        raise ValueError(f"{store.url_of(METRICS_NAME)}: no config record (the run never started training)")
    started = configs[-1]
    config, recipe = started["config"], started.get("recipe") or {}
    train = last_per_step([r for r in records if r["kind"] == "train"])
    evals = last_per_step([r for r in records if r["kind"] == "eval"])
    best = best_record(checkpoints_of(run))
    rates = [r["clips_per_s"] for r in train[1:]] or [r["clips_per_s"] for r in train]
    return {
        "run": run, "config": config, "recipe": recipe, "options": [tuple(row) for row in started.get("option_origins", [])],
        "train": train, "evals": evals, "best": best, "last_eval": evals[-1] if evals else None,
        "best_eval": next((e for e in evals if best and e["step"] == best["step"]), None),
        "clips_per_s": statistics.median(rates) if rates else None, "hardware": started.get("hardware", {}),
        "precision": started.get("precision", config.get("precision")), "padding_rule": config.get("padding_rule") or "masked",
        "world_size": started.get("world_size"), "steps": train[-1]["step"] if train else 0,
        "shards": {**_training_sources(started), "validation": (config.get("val_shards"), _manifest_totals(config.get("val_shards")))},
        "plots": _plots(train, evals) if train else {},
        "fit_only": started.get("validation_held_out") is False,  # validated on training shards (the trainer decides and records it)
    }  # fmt: skip


FIT_NOTE = "fit, not held-out: the validation shards are also training shards (pipeline build --val-fraction F holds out a split)"


def shown_value(value: object, origin: str) -> str:
    """An option's value as the card shows it: a default the run resolved says so (``default -> masked``)."""
    return f"default -> {value}" if origin == "resolved" else str(value)


def _metric_row(label: str, result: dict | None) -> list[str]:
    if result is None:
        return [label, *["-"] * 10]
    return [label, *(f"{result[d][m]:.1f}" for d in ("t2v", "v2t") for m in METRICS)]


def render_markdown(card: dict) -> str:
    recipe, best = card["recipe"], card["best"]
    lines = [f"# Results card: {card['run']}", ""]
    lines += [f"Recipe: **{recipe['name']}** ({recipe.get('source', '')})" if recipe else "Recipe: none (options from flags and defaults)", ""]
    lines += [f"- steps: {card['steps']}; clips/s (median): {card['clips_per_s']:.1f}" if card["clips_per_s"] else f"- steps: {card['steps']}",
              f"- precision: {card['precision']}; padding rule: {card['padding_rule']}; world size: {card['world_size']}",
              f"- hardware: {', '.join(f'{k} {v}' for k, v in card['hardware'].items())}", ""]  # fmt: skip
    lines += ["## Numbers", "", f"Published ({recipe.get('name', 'no recipe')}): {recipe.get('published') or 'none'}", ""]
    lines += [f"**This run's numbers: {FIT_NOTE}.**", ""] if card["fit_only"] else []
    header = ["", *(f"{d} {m}" for d in ("t2v", "v2t") for m in METRICS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best_label = f"best {best['metric']} (step {best['step']})" if best else "best (no --keep-best)"
    for row in (_metric_row(f"last (step {card['last_eval']['step']})" if card["last_eval"] else "last", card["last_eval"]),
                _metric_row(best_label, card["best_eval"])):  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Shards", ""]
    for role, (location, totals) in card["shards"].items():
        lines.append(f"- {role}: {location or 'none'}" + (f" ({', '.join(f'{k} {v}' for k, v in totals.items())})" if totals else ""))
    lines += ["", "## Curves", ""] + [f"![{name}](card/{name}.png)" for name in card["plots"]]
    lines += ["", "## Options", "", "| option | value | from |", "|---|---|---|"]
    lines += [f"| --{name.replace('_', '-')} | {shown_value(value, origin)} | {origin} |" for name, value, origin in card["options"]]
    return "\n".join(lines) + "\n"


def render_html(card: dict) -> str:
    markdown_free = []  # the same content as the markdown, laid out as HTML with the plots inlined
    recipe, best, esc = card["recipe"], card["best"], html.escape
    markdown_free.append(f"<h1>Results card</h1><p class='run'>{esc(card['run'])}</p>")
    markdown_free.append(f"<p>Recipe: <b>{esc(recipe['name'])}</b> ({esc(recipe.get('source', ''))})</p>" if recipe else
                         "<p>Recipe: none (options from flags and defaults)</p>")  # fmt: skip
    facts = [("steps", card["steps"]), ("clips/s (median)", f"{card['clips_per_s']:.1f}" if card["clips_per_s"] else "-"),
             ("precision", card["precision"]), ("padding rule", card["padding_rule"]), ("world size", card["world_size"]),
             *(("hardware: " + k, v) for k, v in card["hardware"].items())]  # fmt: skip
    markdown_free.append("<table class='facts'>" + "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in facts) + "</table>")
    markdown_free.append(f"<h2>Numbers</h2><p id='published'>Published: {esc(recipe.get('published') or 'none')}</p>")
    if card["fit_only"]:
        markdown_free.append(f"<p id='fit-only' class='warning'><b>This run's numbers: {esc(FIT_NOTE)}.</b></p>")
    header = "".join(f"<th>{d} {m}</th>" for d in ("t2v", "v2t") for m in METRICS)
    best_label = f"best {best['metric']} (step {best['step']})" if best else "best (no --keep-best)"
    rows = [_metric_row(f"last (step {card['last_eval']['step']})" if card["last_eval"] else "last", card["last_eval"]), _metric_row(best_label, card["best_eval"])]
    markdown_free.append("<table id='numbers'><tr><th></th>" + header + "</tr>" +
                         "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")  # fmt: skip
    markdown_free.append("<h2>Shards</h2><ul>" + "".join(
        f"<li>{role}: {esc(str(location or 'none'))}" + (f" ({esc(', '.join(f'{k} {v}' for k, v in totals.items()))})" if totals else "") + "</li>"
        for role, (location, totals) in card["shards"].items()) + "</ul>")  # fmt: skip
    markdown_free.append("<h2>Curves</h2><div id='plots'>" + "".join(
        f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>" for name, png in card["plots"].items()) + "</div>")  # fmt: skip
    markdown_free.append("<h2>Options</h2><table id='options'><tr><th>option</th><th>value</th><th>from</th></tr>" + "".join(
        f"<tr class='{origin}'><td>--{esc(name.replace('_', '-'))}</td><td>{esc(shown_value(value, origin))}</td><td>{origin}</td></tr>"
        for name, value, origin in card["options"]) + "</table>")  # fmt: skip
    style = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1300px} table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left} img{margin:4px;border:1px solid #eee}"
             ".run{color:#555} tr.recipe td{background:#eef6ff} tr.flag td{background:#fff4e0}"
             ".warning{background:#fff0f0;border:1px solid #e99;padding:6px 10px}")  # fmt: skip
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Results card</title><style>" + style + "</style></head><body>"
            + "".join(markdown_free) + "</body></html>")  # fmt: skip


def write_card(run: str) -> list[str]:
    """card.md, card.html and card/*.png in the run folder (local or any fsspec URL); returns what was written."""
    card = card_contents(run)
    store = Store(run)
    for name, png in card["plots"].items():
        store.write_bytes(f"card/{name}.png", png)
    store.write_bytes("card.md", render_markdown(card).encode("utf-8"))
    store.write_bytes("card.html", render_html(card).encode("utf-8"))
    return [store.url_of("card.md"), store.url_of("card.html")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.card", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("run", help="a training run's --output-dir (local folder or fsspec URL)")
    args = parser.parse_args(argv)
    try:
        for written in write_card(args.run):
            print(written)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
