"""Weights packed as one flat array per dtype: lossless, fewer objects, half the bytes at fp16, and every strategy
PneumoFL offers aggregates exactly as it does with one array per tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from core.config import RunConfig
from core.errors import ConfigError
from core.events import ClientUpdate
from core.federated.local_layers import site_local_keys
from core.federated.recorder import RecordingStrategy, content_bytes, weighted_metrics
from core.federated.settings import STRATEGIES, FederationConfig
from core.federated.strategies import build_aggregation
from core.federated.wire import ARRAYS_KEY, Layout, WireError, layout_of, pack, pack_content, unpack
from core.model.module import PneumoniaClassifier
from core.sinks import ListSink


def _state(seed: int, local_bn: bool = False) -> dict[str, np.ndarray]:
    """small_cnn's state_dict (floats and BatchNorm's int64 counters), as a site or the server holds it."""
    torch.manual_seed(seed)
    model = PneumoniaClassifier(backbone="small_cnn")
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if local_bn:
        for key in site_local_keys(model, local_bn=True, statistics=False):
            state.pop(key)
    return state


def _message_content(arrays: ArrayRecord, layout: Layout) -> RecordDict:
    content = RecordDict({"config": ConfigRecord({"server-round": 1})})
    pack_content(content, arrays, layout)
    return content


def test_packing_is_lossless_and_sends_a_few_objects_instead_of_one_per_tensor() -> None:
    state = _state(1)
    per_tensor = RecordDict(
        {ARRAYS_KEY: ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in state.items()})}
    )
    arrays, layout = pack(state)
    assert set(arrays) == {"<f4", "<i8"}  # one float32 array, one for the counters
    content = _message_content(arrays, layout)
    assert len(content.config_records) == 1, "Flower's adaptive clipping mod allows one ConfigRecord"
    back = unpack(content[ARRAYS_KEY], layout_of(content))
    assert list(back) == list(state)
    assert all(back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]) for k in state)
    objects = len(get_all_nested_objects(per_tensor)), len(get_all_nested_objects(content))
    assert objects[1] <= 7 < len(state) < objects[0], objects  # records, 2 arrays and their chunks


def test_fp16_halves_the_bytes_and_comes_back_as_float32() -> None:
    state = {"conv.weight": np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32), "n": np.array(3)}
    full, half = _message_content(*pack(state, "fp32")), _message_content(*pack(state, "fp16"))
    assert content_bytes(half) < 0.55 * content_bytes(full)
    layout = layout_of(half)
    assert layout is not None and layout.precision == "fp16"
    back = unpack(half[ARRAYS_KEY], layout)
    assert back["conv.weight"].dtype == np.float32 and back["n"].dtype == state["n"].dtype and back["n"] == 3
    assert np.allclose(back["conv.weight"], state["conv.weight"], rtol=1e-3, atol=1e-3)


def test_a_layout_that_lies_is_refused_with_a_sentence() -> None:
    arrays, layout = pack({"a": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)})
    with pytest.raises(WireError, match="ends before 'b'"):
        unpack(arrays, Layout(layout.names, ((4,), (3,)), layout.dtypes))
    with pytest.raises(WireError, match="more numbers"):
        unpack(arrays, Layout(layout.names, ((4,), (1,)), layout.dtypes))
    with pytest.raises(WireError, match="no <i8 array"):
        unpack(arrays, Layout(layout.names, layout.shapes, ("<f4", "<i8")))
    with pytest.raises(WireError, match="incomplete"):
        layout_of(RecordDict({"config": ConfigRecord({"wire-names": ["a"]})}))


def test_differential_privacy_refuses_half_precision() -> None:
    with pytest.raises(ConfigError, match="wire-precision fp32"):
        FederationConfig(dp_noise=1.0, wire_precision="fp16").validate()


class _TwoSites:
    def get_node_ids(self) -> list[int]:
        return [11, 12]


PLANS = [
    *[pytest.param({"strategy": name}, id=name) for name in STRATEGIES],
    pytest.param({"strategy": "fedavg", "dp_noise": 0.5, "dp_clipping": "fixed"}, id="dp-fixed-clipping"),
    pytest.param({"strategy": "fedavg", "dp_noise": 0.5, "dp_clipping": "adaptive"}, id="dp-adaptive-clipping"),
    pytest.param({"strategy": "fedavg", "local_bn": True}, id="fedbn"),
]


def _reply(request: Message, trained: dict[str, np.ndarray], packed: bool, metrics: dict) -> Message:
    """A site's reply as client_app builds it: packed in the request's order and precision, or per tensor."""
    site = {"site-name": f"site-{request.metadata.dst_node_id}"}
    if packed:
        sent = layout_of(request.content)
        arrays, layout = pack(trained, sent.precision, sent.names)
        site |= layout.to_config()
    else:
        arrays = ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in trained.items()})
    content = RecordDict({ARRAYS_KEY: arrays, "metrics": MetricRecord(metrics), "site": ConfigRecord(site)})
    return Message(content, reply_to=request)


def _federate(plan: FederationConfig, packed: bool) -> dict[str, np.ndarray]:
    """Two rounds of two sites through the RecordingStrategy; the sites' replies packed or one array per tensor."""
    strategy = RecordingStrategy(
        build_aggregation(plan, weighted_metrics), ListSink(), run_id=1, min_sites=2, round_timeout=5, site_names=dict
    )
    global_state = _state(0, plan.local_bn)
    config = ConfigRecord({})  # Flower hands the strategy the same one every round
    for server_round in (1, 2):
        arrays = ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in global_state.items()})
        requests = list(strategy.configure_train(server_round, arrays, config, _TwoSites()))
        assert all(len(r.content.config_records) == 1 and layout_of(r.content) for r in requests)  # sent packed
        replies = []
        for seed, request in enumerate(requests, start=10 * server_round):
            received = unpack(request.content[ARRAYS_KEY], layout_of(request.content))
            noise = np.random.default_rng(seed)
            trained = {k: np.asarray(v + noise.normal(0, 0.05, v.shape).astype(v.dtype)) for k, v in received.items()}
            metrics = {"num-examples": 20 + seed, "uniform-weight": 1, "norm_bit": seed % 2}
            replies.append(_reply(request, trained, packed, metrics))
        np.random.seed(server_round)  # the DP wrappers' noise: the same draws for both ways of sending
        result, _ = strategy.aggregate_train(server_round, replies)
        assert result is not None
        global_state = {k: v.numpy() for k, v in result.items()}
    return global_state


@pytest.mark.parametrize("changes", PLANS)
def test_every_strategy_aggregates_packed_replies_exactly_as_per_tensor_ones(monkeypatch, changes) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 5)  # as in Flower's ServerApp process
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    plan = FederationConfig(training=RunConfig(backbone="small_cnn"), min_sites=2, **changes).validate()
    per_tensor, packed = _federate(plan, packed=False), _federate(plan, packed=True)
    assert list(packed) == list(per_tensor)
    for name in per_tensor:
        assert packed[name].dtype == per_tensor[name].dtype and np.array_equal(packed[name], per_tensor[name]), name
    assert any(not np.array_equal(v, _state(0, plan.local_bn)[k]) for k, v in packed.items()), "the model moved"


def test_a_site_whose_reply_cannot_be_unpacked_fails_by_name_and_the_round_goes_on(monkeypatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 5)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    plan = FederationConfig(training=RunConfig(backbone="small_cnn"), min_sites=1)
    sink = ListSink()
    strategy = RecordingStrategy(
        build_aggregation(plan, weighted_metrics), sink, run_id=1, min_sites=1, round_timeout=5, site_names=dict
    )
    state = _state(0)
    arrays = ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in state.items()})
    requests = list(strategy.configure_train(1, arrays, ConfigRecord({}), _TwoSites()))
    replies = [_reply(request, state, True, {"num-examples": 5}) for request in requests]
    lying = replies[1].content["site"]  # claims one more tensor than it sends
    lying["wire-names"] = [*lying["wire-names"], "extra"]
    lying["wire-dtypes"] = [*lying["wire-dtypes"], "<f4"]
    lying["wire-ranks"] = [*lying["wire-ranks"], 1]
    lying["wire-dims"] = [*lying["wire-dims"], 7]
    result, _ = strategy.aggregate_train(1, replies)
    assert result is not None  # the other site's model alone (it sent the global model back unchanged)
    assert all(np.array_equal(result[k].numpy(), v) for k, v in state.items())
    # (Unpushed messages have no ids, so the updates here cannot tell the two sites apart by node.)
    updates = [u for u in sink.events if isinstance(u, ClientUpdate)]
    failed = [u for u in updates if u.failed]
    assert len(updates) == 2 and len(failed) == 1
    assert failed[0].error == (
        "its reply could not be read: the <f4 array ends before 'extra' (the layout and the arrays differ)"
    )
