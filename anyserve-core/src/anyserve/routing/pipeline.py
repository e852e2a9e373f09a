"""One routing decision: :class:`Pipeline` runs the filters, sums the weighted scorers, asks the picker.

Built once per process from the ``[routing]`` settings (:func:`build_pipeline`)
and shared by every request: its cost is paid per request, so one candidate
skips scoring and picking, and a scorer with weight 0 is never called.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyserve.candidates import Candidate
from anyserve.errors import ConfigError, PluginError
from anyserve.routing.request import RouteRequest
from anyserve.routing.stages import FILTER, PICKER, SCORER, Filter, Picker, Scorer

if TYPE_CHECKING:
    from anyserve.catalog import Catalog
    from anyserve.config import Settings
    from anyserve.plugins import PluginManager

log = logging.getLogger("anyserve.routing")

#: A saved routing state larger than this is neither written nor read: a learner's snapshot is a few MiB at most.
MAX_STATE_BYTES = 8 * 1024 * 1024
#: Characters a stage name keeps in its state file's name; others become ``_``.
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

#: The plugin whose ``anyserve_select_target`` is core's own; anything else implementing it picks instead.
BUILTIN_SELECT = "least_loaded"
#: What answers the older routing hook: (query, candidates, scope) -> a candidate or None.
SelectHook = Callable[..., Candidate | None]


@dataclass(frozen=True)
class Stage:
    """A built stage with the name it was selected by and, for scorers, its weight."""

    name: str
    impl: Any
    weight: float = 1.0


class Pipeline:
    """Filters, weighted scorers and a picker, run in that order for every decision."""

    def __init__(
        self,
        filters: Sequence[Stage],
        scorers: Sequence[Stage],
        picker: Stage,
        *,
        scope: str = "router",
        pm: PluginManager | None = None,
        sample: int = 0,
    ) -> None:
        self.filters = tuple(filters)
        self.scorers = tuple(s for s in scorers if s.weight)
        self.picker = picker
        self.scope = scope
        self._filter_calls = tuple(f.impl.filter for f in self.filters)
        self._score_calls = tuple((s.impl.score, s.weight, s.name) for s in self.scorers)
        self._observers = tuple(s.impl.observe for s in self.scorers if hasattr(s.impl, "observe"))
        self._forgetters = tuple(s.impl.forget for s in self.scorers if hasattr(s.impl, "forget"))
        self._nominators = tuple(s.impl.nominate for s in self.scorers if hasattr(s.impl, "nominate"))
        #: Most candidates a decision scores (0: all); past it, a random sample plus :meth:`nominees`.
        self.sample = sample
        self._pick = picker.impl.pick
        self._caller = None if pm is None else pm.hook.anyserve_select_target
        self._seen_impls = -1
        self._select_hook: SelectHook | None = None
        #: The plugins whose ``anyserve_select_target`` decide in the picker's place, if any.
        self.hook_owner: str | None = None

    def _overridden(self) -> SelectHook | None:
        """The older routing hook when a plugin other than core's own implements it (checked as plugins come)."""
        if self._caller is None:
            return None
        impls = self._caller.get_hookimpls()
        if len(impls) != self._seen_impls:
            self._seen_impls = len(impls)
            owners = [impl.plugin_name for impl in impls if impl.plugin_name != BUILTIN_SELECT]
            self._select_hook = self._caller if owners else None
            self.hook_owner = ", ".join(reversed(owners)) or None
        return self._select_hook

    def choose(self, request: RouteRequest, candidates: list[Candidate]) -> Candidate | None:
        """The candidate ``request`` goes to, or ``None`` when the filters leave none."""
        for keep in self._filter_calls:
            candidates = keep(request, candidates)
            if not candidates:
                return None
        hook = self._overridden()
        if len(candidates) == 1 and hook is None:
            chosen = candidates[0]
        else:
            self.rate(request, candidates)
            chosen = self._decide(request, candidates, hook)
        for observe in self._observers:
            observe(request, chosen)
        return chosen

    def rate(self, request: RouteRequest, candidates: Sequence[Candidate]) -> None:
        """Set each candidate's ``route_score`` to its weighted total."""
        totals = [0.0] * len(candidates)
        for score, weight, name in self._score_calls:
            values = score(request, candidates)
            if len(values) != len(totals):
                raise PluginError(f"routing scorer {name!r} gave {len(values)} scores for {len(totals)} candidates")
            totals = [total + weight * value for total, value in zip(totals, values, strict=True)]
        for candidate, total in zip(candidates, totals, strict=True):
            candidate.route_score = total

    def _decide(self, request: RouteRequest, candidates: list[Candidate], hook: SelectHook | None) -> Candidate:
        if hook is not None:
            chosen = hook(query=request.query, candidates=candidates, scope=self.scope)
            if chosen is not None:
                if not any(chosen is c for c in candidates):
                    raise PluginError(
                        f"anyserve_select_target returned {chosen!r}, which is not one of the "
                        f"{len(candidates)} candidates it was given (ids: {', '.join(c.id for c in candidates)})"
                    )
                return chosen
        return self._pick(request, candidates)

    def nominees(self, request: RouteRequest, ids: Sequence[str]) -> set[str]:
        """The ids of ``ids`` the scorers would rate high: always among the candidates of a sampled decision."""
        named: set[str] = set()
        for nominate in self._nominators:
            named.update(nominate(request, ids))
        return named

    def forget(self, target_id: str) -> None:
        """Tell the learning scorers a replica is gone."""
        for forget in self._forgetters:
            forget(target_id)

    def learners(self) -> list[tuple[str, Any]]:
        """(name, scorer) of every scorer whose learning can be saved: it has both ``snapshot`` and ``restore``."""
        return [(s.name, s.impl) for s in self.scorers if hasattr(s.impl, "snapshot") and hasattr(s.impl, "restore")]

    @staticmethod
    def state_file(directory: str | os.PathLike[str], name: str) -> Path:
        """Where the scorer ``name`` keeps its state in ``directory``: ``routing-<name>.json``."""
        return Path(directory) / f"routing-{_FILE_NAME_UNSAFE.sub('_', name)}.json"

    def save(self, directory: str | os.PathLike[str]) -> list[str]:
        """Write each learner's snapshot to ``directory`` (made 0700 when missing); returns the names saved.

        Called at shutdown, so a failure is logged rather than raised: a
        router that cannot save what it learned still stops cleanly. Each
        file is written aside and renamed over the old one, so a crash
        mid-write leaves the previous state, not half of a new one.
        """
        saved: list[str] = []
        learners = self.learners()
        if not learners:
            return saved
        folder = Path(directory)
        for name, learner in learners:
            path = self.state_file(folder, name)
            try:
                text = json.dumps(learner.snapshot(), separators=(",", ":"))
                if len(text) > MAX_STATE_BYTES:
                    log.warning(
                        "routing state of %r not saved: %d bytes, over the %d a router reads back",
                        name,
                        len(text),
                        MAX_STATE_BYTES,
                    )
                    continue
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                aside = path.with_name(path.name + ".tmp")
                descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(aside, path)
            except (OSError, TypeError, ValueError) as exc:
                log.warning("routing state of %r not saved to %s: %s", name, path, exc)
                continue
            saved.append(name)
        return saved

    def load(self, directory: str | os.PathLike[str]) -> list[str]:
        """Restore each learner from ``directory``, where a file for it exists; returns the names restored.

        What is learned is only ever a hint, so a file that is too large,
        not JSON, or refused by its learner is skipped with a warning and
        the scorer starts empty: a router always starts.
        """
        restored: list[str] = []
        for name, learner in self.learners():
            path = self.state_file(directory, name)
            try:
                size = path.stat().st_size
                if size > MAX_STATE_BYTES:
                    log.warning("routing state %s ignored: %d bytes, over the %d read", path, size, MAX_STATE_BYTES)
                    continue
                data = json.loads(path.read_bytes())
                if not isinstance(data, dict):
                    raise ValueError(f"a JSON {type(data).__name__}, not an object")
                learner.restore(data)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
                log.warning("routing state %s ignored (the scorer starts empty): %s", path, exc)
                continue
            restored.append(name)
        return restored

    def describe(self) -> dict[str, Any]:
        """The active pipeline, for ``anyserve plugins list`` and the router's status."""
        picker = self.picker.name
        if self._overridden() is not None:
            picker = f"anyserve_select_target ({self.hook_owner}), then {picker}"
        return {
            "filters": [f.name for f in self.filters],
            "scorers": {s.name: s.weight for s in self.scorers},
            "picker": picker,
            "sample": self.sample,
        }


def build_pipeline(catalog: Catalog, settings: Settings, *, scope: str = "router") -> Pipeline:
    """The pipeline ``[routing]`` configures, its stages built from the plugins' records.

    An unknown stage name, or a name of the wrong kind (a scorer given as the
    picker), is a :class:`ConfigError` listing what is installed.
    """
    routing = settings.routing
    options: Mapping[str, Mapping[str, Any]] = routing.options

    def build(kind: str, name: str, weight: float = 1.0) -> Stage:
        record = catalog.routing_stage(name)
        if record.kind != kind:
            installed = ", ".join(catalog.routing_stage_names(kind)) or "none"
            raise ConfigError(
                f"routing stage {name!r} is a {record.kind}, not a {kind}; {kind}s installed: {installed}"
            )
        impl = record.factory(dict(options.get(name, {})))
        expected = {FILTER: Filter, SCORER: Scorer, PICKER: Picker}[kind]
        if not isinstance(impl, expected):
            raise PluginError(f"routing {kind} {name!r} does not implement {expected.__name__}: got {impl!r}")
        return Stage(name, impl, weight)

    filters = [build(FILTER, name) for name in routing.filters]
    scorers = [build(SCORER, name, weight) for name, weight in routing.scorers.items()]
    picker = build(PICKER, routing.picker)
    return Pipeline(filters, scorers, picker, scope=scope, pm=catalog.pm, sample=routing.sample)


def default_pipeline(pm: PluginManager, *, scope: str = "router") -> Pipeline:
    """The pipeline of default ``[routing]`` settings, for callers that were given no configuration."""
    from anyserve.catalog import Catalog
    from anyserve.config import Settings

    return build_pipeline(Catalog(pm), Settings(), scope=scope)
