"""Searches as shoppers are served them: the shopper's params (profile and context) and, under
an experiment, the arm (A/B) or the interleaved page. The sidecar's /search and `esrank search`
both serve through `served_search`, so both give the same ranking for the same request."""

from __future__ import annotations

from dataclasses import replace

from esrank.personal.experiment import Experiment, bucket, configured, team_draft
from esrank.personal.shopper import ShopperContext, shopper_params
from esrank.ranking.search import SearchResult, rank


def params_for(app, context: ShopperContext | None) -> dict:
    """The sltr shopper params for a ShopperContext (None or anonymous: none), from its
    stored profile (`app.profile`, cached) and what the context says."""
    if context is None or context.anonymous:
        return {}
    return shopper_params(app.profile(context.user_id) if context.user_id else None, context)


def experiment_search(app, query: str, experiment: Experiment, *, unit: str, size: int = 10,
                      window: int | None = None, shopper_params: dict | None = None
                      ) -> tuple[SearchResult, dict]:
    """One search under an Experiment: (SearchResult, the UBI attributes saying how it was
    served). A/B: `unit` (the shopper, else the query id) picks the arm. Interleaving: both
    arms rank, and team-draft builds the page (seeded by `unit`)."""
    def run(which: str) -> SearchResult:
        return rank(app, query, which, size=size, window=window, shopper_params=shopper_params)

    if experiment.mode == "ab":
        arm = bucket(unit, experiment.name, ("control", "treatment"))
        return run(getattr(experiment, arm)), {"experiment": experiment.name, "arm": arm}
    a, b = run(experiment.control), run(experiment.treatment)
    ids, teams = team_draft([h.doc_id for h in a.hits], [h.doc_id for h in b.hits], size, unit)
    hit_of = {h.doc_id: h for h in [*b.hits, *a.hits]}
    hits = [replace(hit_of[d], rank=r) for r, d in enumerate(ids, 1)]
    result = SearchResult(a.query, f"interleave({a.ranker}, {b.ranker})", hits,
                          a.degraded or b.degraded, dropped_terms=a.dropped_terms)
    return result, {"experiment": experiment.name, "arm": None, "teams": teams}


def served_search(app, query: str, which: str | None = None, *, unit: str, size: int = 10,
                  window: int | None = None, features: bool = False, rerank: int = 0,
                  shopper: ShopperContext | None = None, requests: bool = False
                  ) -> tuple[SearchResult, dict]:
    """What a shopper is served: (SearchResult, how it was served: the shopper params and,
    under an experiment, its name and arm, as UBI records them). A request that names no
    configuration (`which` None) and no rerank stage is served by the configured experiment
    when there is one (the arm picked by the shopper's user or session id, else `unit`);
    otherwise by `which` (default: the active model). `requests`: the answer carries the
    engine requests that served it."""
    params = params_for(app, shopper)
    experiment = configured(app.settings.serve.experiment)
    if which is None and not rerank and experiment is not None:
        unit = (shopper.user_id or shopper.session_id if shopper else None) or unit
        result, attributes = experiment_search(app, query, experiment, unit=unit, size=size,
                                               window=window, shopper_params=params)
        return result, {"shopper": params, **attributes}
    return rank(app, query, which or "active", size=size, window=window, features=features,
                rerank=rerank, shopper_params=params, requests=requests), {"shopper": params}
