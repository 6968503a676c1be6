"""A server's state after a round, kept and read back into a fresh strategy: the rounds after it aggregate exactly as
an uninterrupted federation's, for every strategy PneumoFL offers, and the privacy spent goes on from where it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.supercore.task_identity import TaskIdentity

from core.config import RunConfig
from core.federated.recorder import RecordingStrategy, weighted_metrics
from core.federated.server_state import ContinuedRounds, ServerState, capture, restore
from core.federated.settings import FederationConfig
from core.federated.strategies import build_aggregation
from core.federated.wire import ARRAYS_KEY, layout_of, unpack
from core.sinks import ListSink
from tests.core.federated.test_wire import PLANS, _reply, _state, _TwoSites


def _server(plan: FederationConfig) -> RecordingStrategy:
    return RecordingStrategy(
        build_aggregation(plan, weighted_metrics), ListSink(), run_id=1, min_sites=2, round_timeout=5, site_names=dict
    )


def _rounds(
    strategy, recording: RecordingStrategy, global_state: dict[str, np.ndarray], rounds: range, done: int = 0
) -> dict[str, np.ndarray]:
    """Flower's rounds ``rounds`` (real rounds ``done + i``): two sites each add noise seeded by the real round."""
    config = ConfigRecord({})
    for flower_round in rounds:
        real = flower_round + done
        arrays = ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in global_state.items()})
        requests = list(strategy.configure_train(flower_round, arrays, config, _TwoSites()))
        assert all(r.content["config"]["server-round"] == real for r in requests)  # what the sites are told
        replies = []
        for seed, request in enumerate(requests, start=10 * real):
            received = unpack(request.content[ARRAYS_KEY], layout_of(request.content))
            noise = np.random.default_rng(seed)
            trained = {k: np.asarray(v + noise.normal(0, 0.05, v.shape).astype(v.dtype)) for k, v in received.items()}
            metrics = {"num-examples": 20 + seed, "uniform-weight": 1, "norm_bit": seed % 2}
            replies.append(_reply(request, trained, True, metrics))
        np.random.seed(real)  # the DP wrappers' noise: the same draws with and without the interruption
        result, _ = strategy.aggregate_train(flower_round, replies)
        assert result is not None
        global_state = {k: v.numpy() for k, v in result.items()}
    assert {e.round_number for e in recording.sink.events if e.round_number} == {done + i for i in rounds}
    return global_state


@pytest.mark.parametrize("changes", PLANS)
def test_a_federation_continued_from_its_kept_state_aggregates_as_an_uninterrupted_one(monkeypatch, changes) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 5)  # as in Flower's ServerApp process
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    plan = FederationConfig(training=RunConfig(backbone="small_cnn"), min_sites=2, **changes).validate()
    start = _state(0, plan.local_bn)
    whole = _server(plan)
    expected = _rounds(whole, whole, start, range(1, 5))

    first = _server(plan)
    after_two = _rounds(first, first, start, range(1, 3))
    kept = capture(first.aggregation, 2, {k: torch.from_numpy(v) for k, v in after_two.items()}, {"round": 2})
    # A new server process: a fresh strategy, its state read back from the kept bytes.
    state = ServerState.from_bytes(kept.to_bytes())
    assert state.round_number == 2 and state.best == {"round": 2}
    second = _server(plan)
    restore(second.aggregation, state)
    resumed = {k: v.numpy() for k, v in state.global_state.items()}
    got = _rounds(ContinuedRounds(second, 2), second, resumed, range(1, 3), done=2)

    assert list(got) == list(expected)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
    if plan.private:  # the epsilon spent continues, not from zero
        assert second.aggregation.privacy_spent() == whole.aggregation.privacy_spent()
        assert second.aggregation.privacy_spent()["dp_releases"] == 4


def test_a_state_refuses_another_strategy() -> None:
    adam = _server(FederationConfig(training=RunConfig(backbone="small_cnn"), min_sites=2, strategy="fedadam"))
    adam.aggregation.strategy.m_t = {"w": np.zeros(2)}
    kept = ServerState.from_bytes(capture(adam.aggregation, 1, {}, {}).to_bytes())
    private = FederationConfig(training=RunConfig(backbone="small_cnn"), min_sites=2, dp_noise=0.5).validate()
    with pytest.raises(ValueError, match=r"differs|differential privacy"):
        restore(_server(private).aggregation, kept)
    with pytest.raises(ValueError, match="not a PneumoFL server state"):
        ServerState.from_bytes(_bytes_of({"format": 99}))


def _bytes_of(document: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(document, buffer)
    return buffer.getvalue()


def test_a_federation_to_resume_names_the_flower_runs_it_continues_or_says_why_not(db) -> None:
    from core.federated.server_state import federation_to_resume
    from core.persistence.artifacts import put_artifact
    from core.persistence.federation_records import link_flower_run
    from core.persistence.resumes import ResumeRefused
    from core.persistence.runs import create_run, finish_run

    plan = FederationConfig(name="north-south", rounds=4, min_sites=2, strategy="fedadam")
    config = plan.to_dict() | {"eval_data": "/data/held-out"}
    with db.begin() as s:
        server = create_run(
            s, experiment_name="north-south", training_mode="federated", role="server", config=config, flower_run_id=77
        )
        link_flower_run(s, server, 2**63 + 5)  # Flower's ids are unsigned 64-bit
        finish_run(s, server, status="failed", error_message="the SuperLink stopped")
        done = create_run(s, experiment_name="done", training_mode="federated", role="server", config=config)
        finish_run(s, done, status="completed")
    with pytest.raises(ResumeRefused, match="kept no state to continue from"):
        federation_to_resume(db, server)
    with pytest.raises(ResumeRefused, match="completed; there is nothing to resume"):
        federation_to_resume(db, done)
    with db.begin() as s:
        put_artifact(s, server, "server_state", ServerState(2, {}).to_bytes())
    resumed = federation_to_resume(db, server)
    assert resumed.plan.continued_flower_runs == [77, 2**63 + 5]
    assert resumed.plan.strategy == "fedadam" and resumed.plan.rounds == 4 and resumed.eval_data == "/data/held-out"
