"""The load scenarios: named, versioned definitions, the one used recorded in every result.

A :class:`Scenario` fixes everything that shapes a load run's figures: users, spawn rate,
duration, the user classes' weights, their tasks' weights and think time, the seed data,
the ``time_scale`` of the delays that reproduce the original, and the edge upstream's
fault profile. The failure rate a run reports is *measured* under these faults, never
dialed in: the edge's failure and hang probabilities are properties of the upstream, and
what the service makes of them (retries, fallbacks, timeouts) is what the run observes.

Change a number here and bump ``version``: results with different versions are different
experiments and must not be compared.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Positive = Annotated[float, msgspec.Meta(gt=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]

#: The user classes of ``loadtests/locustfile.py``, by name.
USER_CLASSES = ("SalesRep", "Manager", "FeedViewer")
#: The tasks of each user class of the locustfile, by method name (what ``task_weights``
#: may reweigh; ``tests/test_load_units.py`` holds the locustfile to this list).
USER_TASKS = {
    "SalesRep": (
        "open_pipeline",
        "open_deal",
        "move_deal",
        "update_deal",
        "delete_own_deal",
        "create_deal",
    ),
    "Manager": ("all_deals", "pipeline_stats", "owners", "companies"),
    "FeedViewer": ("watch",),
}
#: Client behaviours the locustfile models (ORIGINAL_SYSTEM.md §2.1 and §3.1).
CLIENTS = ("legacy", "optimized")


class EdgeFaultProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the edge upstream does wrong (see :class:`sixty_core.edge.EdgeFaults`):
    lognormal latency (median, shape), the share of calls answered 503, and the share
    that never answer."""

    latency_ms_median: Annotated[float, msgspec.Meta(ge=0)] = 40.0
    latency_sigma: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    failure_rate: Probability = 0.05
    hang_probability: Probability = 0.01
    seed: int = 7


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A load scenario. ``weights`` are Locust's user-class weights; ``task_weights``
    replace the locustfile's weights of the tasks it names, per user class (the others
    keep theirs); ``think_s`` the (min, max) pause between one user's tasks;
    ``feed_dwell_s`` how long a FeedViewer stays on the stream, uniformly drawn between
    the two bounds."""

    name: str
    version: int
    users: Annotated[int, msgspec.Meta(ge=1)]
    spawn_rate: Positive
    duration_s: Positive
    weights: dict[str, Annotated[int, msgspec.Meta(ge=0)]]
    think_s: tuple[float, float]
    feed_dwell_s: tuple[float, float]
    seed_scale: Annotated[int, msgspec.Meta(ge=1)]
    seed: int
    time_scale: Positive
    edge: EdgeFaultProfile
    task_weights: dict[str, dict[str, Annotated[int, msgspec.Meta(ge=0)]]] = msgspec.field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(USER_CLASSES)
        if unknown:
            raise ValueError(f"unknown user classes in weights: {', '.join(sorted(unknown))}")
        if not any(self.weights.values()):
            raise ValueError("at least one user class needs a weight above 0")
        for user_class, tasks in self.task_weights.items():
            if user_class not in USER_TASKS:
                raise ValueError(f"unknown user class in task_weights: {user_class}")
            unknown = set(tasks) - set(USER_TASKS[user_class])
            if unknown:
                raise ValueError(
                    f"unknown {user_class} tasks in task_weights: {', '.join(sorted(unknown))} "
                    f"(known: {', '.join(USER_TASKS[user_class])})"
                )
            if self.weights.get(user_class) and not any(
                tasks.get(name, 1) for name in USER_TASKS[user_class]
            ):
                raise ValueError(f"task_weights leave {user_class} no task with a weight above 0")
        for label, (low, high) in (("think_s", self.think_s), ("feed_dwell_s", self.feed_dwell_s)):
            if not 0 <= low <= high:
                raise ValueError(f"{label} must be (min, max) with 0 <= min <= max")

    def with_overrides(
        self,
        *,
        users: int | None = None,
        spawn_rate: float | None = None,
        duration_s: float | None = None,
    ) -> Scenario:
        """This scenario with the run-size knobs a command line may change; the result
        keeps the name and version but records the overridden values."""
        return msgspec.structs.replace(
            self,
            users=self.users if users is None else users,
            spawn_rate=self.spawn_rate if spawn_rate is None else spawn_rate,
            duration_s=self.duration_s if duration_s is None else duration_s,
        )

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Scenario:
        """Decode a scenario; ValueError with msgspec's message when it is malformed."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid scenario: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ValueError(f"scenario is not valid JSON: {exc}") from None


#: The standard scenario: 32 users for 60 s on seed scale 4 (20 owners, 2,000 deals); sales
#: reps outnumber feed viewers and managers; the edge is slow (40 ms median) and fails 5%
#: of its calls and hangs on 1%, at the original's real delays (time_scale 1).
STANDARD = Scenario(
    name="standard",
    version=1,
    users=32,
    spawn_rate=8.0,
    duration_s=60.0,
    weights={"SalesRep": 6, "Manager": 1, "FeedViewer": 2},
    think_s=(0.2, 1.0),
    feed_dwell_s=(1.0, 8.0),
    seed_scale=4,
    seed=42,
    time_scale=1.0,
    edge=EdgeFaultProfile(),
)

#: The standard scenario with the sales reps deleting their own deals as often as they
#: create them, so the table stays the size it was seeded: for memory soaks, where a
#: growing table would grow the cached lists (and the RSS) with it. Creates keep the
#: standard's weight; deleting is weighed higher because it needs a deal of one's own.
STEADY_DATA = msgspec.structs.replace(
    STANDARD,
    name="steady-data",
    task_weights={"SalesRep": {"create_deal": 2, "delete_own_deal": 3}},
)

SCENARIOS = {s.name: s for s in (STANDARD, STEADY_DATA)}


def client_for_profile(profile_name: str) -> str:
    """The client behaviour that goes with a service profile: the legacy client
    (``useDeals``) for ``legacy`` and its ablations (``legacy+FLAG``), the optimized client
    (``useDealsOptimized``) otherwise."""
    return "legacy" if profile_name.startswith("legacy") else "optimized"
