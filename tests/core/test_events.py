import dataclasses
import json
import math

import pytest

from core.events import EVENT_TYPES, SCHEMA_VERSION, EpochEnd, Event, TrainingEnd, event_from_dict, event_from_json

# One fully populated example of every event type; the round-trip test fails if a new type is added without one.
REQUIRED = {
    "training_start": {"experiment_name": "demo", "total_epochs": 3, "steps_per_epoch": 10, "config": {"epochs": 3}},
    "epoch_end": {"epoch": 2, "metrics": {"train_loss": 0.5, "val_recall": 0.9}},
    "batch_metrics": {"epoch": 1, "step": 20, "metrics": {"train_loss": 0.7}},
    "gradient_stats": {"step": 50, "global_norm": 1.5, "layer_norms": {"fc.weight": 0.3}},
    "lr_update": {"epoch": 1, "step": 0, "lr": 0.001},
    "early_stopping": {"epoch": 7, "monitor": "val_recall", "best_value": 0.97, "patience": 3, "reason": "no gain"},
    "round_start": {"num_clients": 2},
    "client_update": {"num_examples": 120, "metrics": {"train_loss": 0.4}},
    "round_metrics": {"server_metrics": {"val_recall": 0.8}, "aggregated_client_metrics": {"train_loss": 0.3}},
    "training_end": {
        "status": "completed",
        "best_epoch": 2,
        "best_val_recall": 0.9,
        "final_stats": {"val": {"f1": 1.0}},
    },
    "run_error": {"message": "boom", "fatal": True},
}


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_event_type_round_trips_through_json(kind):
    cls = EVENT_TYPES[kind]
    event = cls(run_id=7, client_id="site-a", round_number=3, **REQUIRED[kind])
    text = event.to_json()
    envelope = json.loads(text)
    assert set(envelope) == {"type", "version", "timestamp", "data"}
    assert envelope["type"] == kind and envelope["version"] == SCHEMA_VERSION
    assert event_from_json(text) == event


def test_every_type_has_an_example():
    assert set(REQUIRED) == set(EVENT_TYPES)


def test_events_are_frozen():
    event = EpochEnd(epoch=1, metrics={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.epoch = 2  # type: ignore[misc]


def test_nan_metric_survives_round_trip():
    event = EpochEnd(epoch=1, metrics={"val_recall": float("nan")})
    back = event_from_json(event.to_json())
    assert isinstance(back, EpochEnd) and math.isnan(back.metrics["val_recall"])


def test_with_run_stamps_the_id_without_touching_the_rest():
    event = TrainingEnd(status="completed", duration=3.0)
    stamped = event.with_run(42)
    assert stamped.run_id == 42 and stamped.duration == 3.0 and event.run_id is None


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"type": "nope", "version": 1, "timestamp": 0, "data": {}}, "unknown event type 'nope'"),
        (
            {"type": "epoch_end", "version": 99, "timestamp": 0, "data": {"epoch": 1, "metrics": {}}},
            "schema version 99",
        ),
        ({"type": "epoch_end", "version": 1, "timestamp": 0, "data": {"metrics": {}}}, "malformed 'epoch_end'"),
        ({"type": "epoch_end", "version": 1, "timestamp": 0, "data": {"epoch": 1, "metrics": {}, "x": 1}}, "malformed"),
    ],
)
def test_bad_envelopes_are_rejected_with_a_reason(payload, fragment):
    with pytest.raises(ValueError, match=fragment):
        event_from_dict(payload)


def test_base_event_is_not_a_registered_type():
    assert Event.TYPE not in EVENT_TYPES
