"""MLflow tags and readable run names for every stage, from the plan's report cells.

Why: in the MLflow UI a researcher compares fine-tunes 2.1 / 3.1 / 3.2 by *what differs*
(pre-training method, dataset, initialisation), so every stage run carries the axes of
the experiments it serves, inherited from its upstream stages, not only a stage key.
A stage shared by several experiments lists them all (`experiments = "3.1,3.2"`).
"""

from __future__ import annotations

from collections import defaultdict

from bench.display_names import method_name, site_name
from bench.plan import Plan


def stage_tags(plan: Plan) -> dict[str, dict[str, str]]:
    exps = {e.id: e for e in plan.matrix.experiments}
    served: dict[str, list[str]] = defaultdict(list)
    seeds: dict[str, int] = {}
    targets: dict[str, list[str]] = defaultdict(list)
    for c in plan.cells:
        for key in (c.pretrain_key, c.finetune_key, c.evaluate_key):
            if key and c.experiment not in served[key]:
                served[key].append(c.experiment)
        seeds[c.finetune_key] = seeds[c.evaluate_key] = c.seed
        if c.target.column not in targets[c.evaluate_key]:
            targets[c.evaluate_key].append(c.target.column)
    out: dict[str, dict[str, str]] = {}
    for key, stage in plan.stages.items():
        ids = served.get(key, [])
        e = exps[ids[0]] if ids else None
        tags: dict[str, str] = {"matrix": plan.matrix.name, "experiments": ",".join(ids)}
        if e is not None:
            tags.update(
                backbone=e.backbone,
                init=e.init,
                pretrain_method=e.pretrain.method,
                pretrain_dataset=e.pretrain.dataset or "-",
                pretrain_subset=str(e.pretrain.subset or "all"),
                batching=e.pretrain.batching.mode,
            )
            if stage.kind != "pretrain":
                tags.update(finetune_dataset=e.finetune.dataset, finetune_classes=str(e.finetune.classes), finetune_mode=e.finetune.mode)
        if key in seeds:
            tags["seed"] = str(seeds[key])
        if stage.kind == "evaluate":
            tags.update(site=str(stage.config["site"]), split=str(stage.config["split"]), columns=", ".join(targets.get(key, [])))
        tags["run_name"] = run_name(stage.kind, tags, ids)
        out[key] = tags
    return out


def run_name(kind: str, tags: dict[str, str], ids: list[str]) -> str:
    """e.g. `3.2 · SimMIM→ChestX-ray14 · seed 1 · eval CheXpert val`."""
    exp = ids[0] + (f"+{len(ids) - 1}" if len(ids) > 1 else "") if ids else "?"
    method = tags.get("pretrain_method", "none")
    pre = "no pre-training" if method == "none" else f"{method_name(method)}→{site_name(tags.get('pretrain_dataset'))}"
    if kind == "pretrain":
        subset = tags.get("pretrain_subset", "all")
        return f"{exp} · pretrain {pre} · {tags.get('backbone')} {tags.get('init')}" + ("" if subset == "all" else f" · {subset} images")
    name = f"{exp} · {pre} · seed {tags.get('seed', '?')}"
    if kind == "finetune":
        return name + f" · finetune {site_name(tags.get('finetune_dataset'))}"
    return name + f" · eval {site_name(tags.get('site'))} {tags.get('split')}"


def eval_columns(plan: Plan) -> dict[str, dict[str, list[str]]]:
    """Per evaluate stage: each report column it serves -> the classes that column averages."""
    from bench.data.labels import resolve_classes

    out: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for c in plan.cells:
        try:
            out[c.evaluate_key][c.target.column] = list(resolve_classes(c.target.classes, c.target.site))
        except Exception:  # a site's own label list may need its data; the per-class AUCs are still logged
            continue
    return dict(out)
