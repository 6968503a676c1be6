"""The Flower-free parts of the federation: settings channels, round bookkeeping, aggregation, the console."""

from __future__ import annotations

import io
import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.config import parse_config_args
from flwr.supercore.task_identity import TaskIdentity

from core.config import RunConfig
from core.errors import ConfigError
from core.events import BatchMetrics, ClientUpdate, EpochEnd, RoundMetrics, RoundStart, TrainingEnd, TrainingStart
from core.federated.console import FederationConsole
from core.federated.local_layers import normalisation_keys, recalibrate_normalisation, site_local_keys, split_state
from core.federated.nodes import Security, SiteNode
from core.federated.recorder import RecordingStrategy, describe_error, weighted_metrics
from core.federated.server_app import BestRound
from core.federated.settings import FederationConfig, ServerSettings, SiteSettings
from core.federated.site import RoundSink
from core.federated.site_names import SiteNames
from core.federated.strategies import build_aggregation
from core.sinks import ListSink

ROOT = Path(__file__).resolve().parents[3]


def test_run_config_round_trips_and_carries_no_site_paths():
    training = RunConfig(experiment_name="x", data_path="/site/secret/xrays", weights_path="", backbone="small_cnn")
    plan = FederationConfig(name="lung", rounds=4, local_epochs=2, min_sites=3, round_timeout=90, training=training)
    run_config = plan.run_config()
    assert "/site/secret" not in str(run_config)  # what the SuperLink sends to every site
    again = FederationConfig.from_run_config(run_config)
    assert (again.rounds, again.local_epochs, again.min_sites, again.round_timeout) == (4, 2, 3, 90.0)
    assert again.training.backbone == "small_cnn" and again.training.data_path == ""


@pytest.mark.parametrize("app", ["core/federated/bundle", "tests/bench/bare_app"])
def test_every_app_we_submit_declares_each_run_config_key(app):
    # Flower refuses a run whose overrides an app does not declare ("Invalid run configuration"): the bare
    # baseline of tests/bench/fl_round.py broke that way once a key was added to PneumoFL's plan.
    declared = tomllib.loads((ROOT / app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert set(declared) == set(FederationConfig().run_config())


def test_node_config_survives_flowers_own_parser(tmp_path):
    site = SiteSettings(
        site_name='north "A"',
        data_path="/data/x rays",
        db_url="sqlite:////tmp/a b.db",
        partition_id=1,
        num_partitions=3,
        partition="label-skew",
        max_threads=2,
    )
    parsed = parse_config_args([str(site.write_node_config(tmp_path / "node-config.toml"))])
    assert parsed == {"site-name": site.site_name}  # only the name: Flower hands the node config to any app
    assert SiteSettings(**json.loads(site.save(tmp_path / "site.json").read_text())) == site


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rounds": 0}, "rounds"),
        ({"min_sites": 0}, "min sites"),
        ({"round_timeout": 0}, "round timeout"),
        ({"name": " "}, "name"),
    ],
)
def test_bad_plan_names_the_setting(overrides, field):
    with pytest.raises(ConfigError, match=field):
        FederationConfig(**overrides).validate()


def test_missing_settings_say_how_to_start_a_node(monkeypatch):
    monkeypatch.delenv("PNEUMOFL_SERVER_SETTINGS", raising=False)
    with pytest.raises(ConfigError, match="pneumofl server start"):
        ServerSettings.from_env()
    monkeypatch.delenv("PNEUMOFL_SITE_SETTINGS", raising=False)
    with pytest.raises(ConfigError, match=r"PNEUMOFL_SITE_SETTINGS.*pneumofl site join"):
        SiteSettings.from_env()


def test_round_sink_numbers_epochs_and_steps_on_across_rounds():
    inner = ListSink()
    sink = RoundSink(inner, round_number=3, epoch_offset=4, step_offset=40)
    sink.handle(TrainingStart(run_id=1, experiment_name="x"))
    sink.handle(BatchMetrics(run_id=1, epoch=1, step=5, metrics={"train_loss": 0.5}))
    sink.handle(EpochEnd(run_id=1, epoch=2, metrics={"train_loss": 0.4, "val_loss": 0.6}))
    sink.handle(TrainingEnd(run_id=1, status="completed"))
    batch, epoch = inner.events
    assert (batch.epoch, batch.step, batch.round_number) == (5, 45, 3)
    assert (epoch.epoch, epoch.round_number) == (6, 3)
    assert sink.last_epoch_metrics == {"train_loss": 0.4, "val_loss": 0.6}


def _reply(n: int, **metrics: float) -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord(),
            "metrics": MetricRecord({"num-examples": n, **metrics}),
            "site": ConfigRecord({"site-name": "s"}),
        }
    )


def test_weighted_metrics_average_by_examples_and_tolerate_a_missing_metric():
    merged = weighted_metrics([_reply(30, train_loss=1.0, val_auroc=0.9), _reply(10, train_loss=3.0)])
    assert merged["train_loss"] == pytest.approx(1.5)
    assert merged["val_auroc"] == pytest.approx(0.9)  # the site without an AUROC does not drag it down
    assert "num-examples" not in merged


def _round(recall, specificity, auroc, tp=5, fp=5, tn=5, fn=5):
    cm = {"val_cm_tp": tp, "val_cm_fp": fp, "val_cm_tn": tn, "val_cm_fn": fn}
    return {"val_recall": recall, "val_specificity": specificity, "val_auroc": auroc} | cm


def test_best_round_is_by_server_auroc_then_youden_and_never_a_one_class_round(tmp_path):
    tracker = BestRound(RunConfig(backbone="small_cnn"), tmp_path / "best.ckpt")
    state = {"w": torch.zeros(2)}
    # Round 1 calls every image pneumonia: perfect recall, an AUROC that still ranks first. It must not win.
    tracker.offer(1, _round(1.0, 0.0, 0.97, tp=10, fp=10, tn=0, fn=0), state, {})
    assert tracker.round == 1  # the only round so far is the best there is
    tracker.offer(2, _round(0.8, 0.7, 0.90), {"w": torch.ones(2)}, {})
    tracker.offer(3, _round(0.7, 0.9, 0.90), {"w": torch.full((2,), 3.0)}, {})  # same AUROC, better Youden's J
    tracker.offer(4, _round(0.9, 0.5, 0.90), state, {})  # same AUROC, worse J
    assert tracker.round == 3 and tracker.metrics["val_specificity"] == 0.9
    saved = torch.load(tmp_path / "best.ckpt", weights_only=True)
    assert saved["epoch"] == 3 and saved["backbone"] == "small_cnn" and saved["state_dict"]["w"].tolist() == [3.0, 3.0]


def test_console_tells_who_returned_what_and_when():
    out = io.StringIO()
    console = FederationConsole(out)
    console.handle(TrainingStart(run_id=7, experiment_name="lung", role="server", total_epochs=2))
    console.handle(RoundStart(run_id=7, round_number=1, num_clients=2, timestamp=100.0))
    console.handle(
        ClientUpdate(
            run_id=7,
            round_number=1,
            client_id="11",
            client_name="north",
            num_examples=40,
            metrics={"train_loss": 0.25},
            timestamp=112.0,
        )
    )
    console.handle(
        ClientUpdate(
            run_id=7,
            round_number=1,
            client_id="12",
            client_name="south",
            num_examples=0,
            failed=True,
            error="no reply within the round timeout (60 s)",
            timestamp=160.0,
        )
    )
    console.handle(RoundMetrics(run_id=7, round_number=1, server_metrics={"val_auroc": 0.91, "val_recall": 0.8}))
    text = out.getvalue()
    assert "Round 1: global model sent to 2 site(s)." in text
    assert "north sent its update (40 images) after 12 s: train loss 0.250" in text
    assert "south FAILED after 60 s: no reply within the round timeout" in text
    assert "Round 1: server evaluation AUROC 0.910, sensitivity 0.800" in text


def test_validated_site_data_is_reused_until_the_folder_changes(tmp_path):
    from core.data.prepare import prepare_dataset
    from tests.imaging import write_folder_dataset

    data = write_folder_dataset(tmp_path / "site", per_class=8, size=32)
    config = RunConfig(experiment_name="x", data_path=str(data), val_fraction=0.25, test_fraction=0.25)
    first = prepare_dataset(config, cache_dir=tmp_path / "cache")
    cached = list((tmp_path / "cache").glob("dataset-*.json"))
    assert len(cached) == 1
    second = prepare_dataset(config, cache_dir=tmp_path / "cache")
    assert second.train == first.train and second.val == first.val and second.summary == first.summary

    # A stale cache entry is not trusted: a new image means validating again (and here, one more sample).
    cached[0].write_text(cached[0].read_text().replace('"train": [[', '"train": [["/gone.png", 0, null], ['))
    assert prepare_dataset(config, cache_dir=tmp_path / "cache").train[0].path.name == "gone.png"  # same folder: reused
    write_folder_dataset(data, per_class=9, size=32, seed=1)  # adds one image per class
    again = prepare_dataset(config, cache_dir=tmp_path / "cache")
    assert len(again.train) + len(again.val) + len(again.test) == 18
    assert all(s.path.name != "gone.png" for s in again.train)


def test_fedprox_without_mu_records_the_default_and_privacy_needs_a_plain_average():
    assert FederationConfig(strategy="fedprox").proximal_mu == 0.01
    assert FederationConfig(strategy="fedprox", proximal_mu=0.1).proximal_mu == 0.1
    again = FederationConfig.from_run_config(
        FederationConfig(strategy="fedadam", local_bn=True, dp_noise=0.0).run_config()
    )
    assert (again.strategy, again.local_bn, again.private) == ("fedadam", True, False)
    with pytest.raises(ConfigError, match="fedavg or fedprox"):
        FederationConfig(strategy="krum", dp_noise=1.0).validate()
    with pytest.raises(ConfigError, match="strategy"):
        FederationConfig(strategy="fedsomething").validate()


def test_flower_errors_are_said_in_words_without_flowers_internals():
    assert "went offline" in describe_error(5, "Error: Node Unavailable — The destination node failed to report...")
    assert "stopped responding" in describe_error(8, "ClientApp stopped responding.")
    raised = "<class 'flwr.clientapp.ClientAppException'>:<'Exception ClientAppException occurred. Message: local training failed (see the site's log)'>"
    assert describe_error(2, raised) == "local training failed (see the site's log)"


def test_normalisation_layers_are_found_by_type_and_recalibrated_from_images():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 4, 3), torch.nn.GroupNorm(2, 4)
    )
    assert normalisation_keys(model) == {
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.weight",
        "3.bias",
    }
    assert site_local_keys(model, local_bn=False, statistics=True) == {
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert site_local_keys(model, local_bn=False, statistics=False) == set()
    shared, local = split_state(model.state_dict(), normalisation_keys(model))
    assert set(shared) == {"0.weight", "0.bias", "2.weight", "2.bias"} and len(local) == 7
    torch.manual_seed(0)
    images = [torch.randn(8, 1, 12, 12) * 3 + 5 for _ in range(4)]
    recalibrate_normalisation(model.eval(), images)
    with torch.no_grad():
        features = model[0](torch.cat(images))
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)
    assert not model.training and model[1].momentum == 0.1


def test_user_paths_reach_flower_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    security = Security.from_dir(Path("fed-certs"))
    assert security.ca_cert == tmp_path / "fed-certs" / "ca.pem" and security.ca_cert.is_absolute()
    site = SiteSettings(site_name="north", data_path="xrays", db_url="sqlite://")
    node = SiteNode(site, "127.0.0.1:9092", tmp_path / "w", root_certificates=Path("ca.pem"), private_key=Path("k.key"))
    assert node.root_certificates == tmp_path / "ca.pem" and node.private_key == tmp_path / "k.key"


def test_site_names_survive_a_reader_in_another_process(tmp_path):
    names = SiteNames(tmp_path / "names.json")
    assert names.read() == {}
    names.add("8779956723322003388", "north")
    names.add(12, "south")
    assert SiteNames(tmp_path / "names.json").read() == {8779956723322003388: "north", 12: "south"}


class _TwoNodes:
    """What a strategy asks of Flower's Grid to address sites: the nodes online."""

    def get_node_ids(self) -> list[int]:
        return [11, 12]


@pytest.mark.parametrize("dp_noise", [0.0, 0.8], ids=["fedavg", "fedavg-fixed-clipping-dp"])
def test_rounds_publish_each_site_once_with_traffic_and_privacy_spent(monkeypatch, dp_noise):
    monkeypatch.setattr(TaskIdentity, "_run_id", 5)  # as in Flower's ServerApp process
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    plan = FederationConfig(training=RunConfig(backbone="small_cnn"), min_sites=2, dp_noise=dp_noise, dp_clip=1.0)
    sink = ListSink()
    strategy = RecordingStrategy(
        build_aggregation(plan, weighted_metrics), sink, run_id=7, min_sites=2, round_timeout=5, site_names=dict
    )

    def reply(request: Message, examples: int, **extra) -> Message:
        metrics = MetricRecord(
            {"num-examples": examples, "uniform-weight": 1, "train_loss": 0.5} | extra
        )  # as sites send
        content = RecordDict({"arrays": ArrayRecord({"w": torch.zeros(64, 64)}), "metrics": metrics})
        content["site"] = ConfigRecord({"site-name": f"site-{request.metadata.dst_node_id}"})
        return Message(content, reply_to=request)

    weights = ArrayRecord({"w": torch.rand(64, 64)})
    spent = []
    for server_round in (1, 2):
        requests = list(strategy.configure_train(server_round, weights, ConfigRecord({"lr": 0.1}), _TwoNodes()))
        assert sorted(m.metadata.dst_node_id for m in requests) == [11, 12]
        replies = [reply(requests[0], 30, per_class_recall=[0.5, 0.7]), reply(requests[1], 10)]
        arrays, metrics = strategy.aggregate_train(server_round, replies)
        assert arrays is not None and metrics is not None and metrics["train_loss"] == pytest.approx(0.5)
        spent.append(strategy.round_metrics(server_round, {}).get("dp_epsilon"))
        weights = arrays
    updates = [e for e in sink.events if isinstance(e, ClientUpdate)]
    assert sorted(u.client_name for u in updates) == ["site-11", "site-11", "site-12", "site-12"]
    assert not any(u.failed for u in updates)
    for update in updates:
        assert "per_class_recall" not in update.metrics  # not a number: kept out, not a crash
        assert update.metrics["bytes_to_site"] > 64 * 64 * 4 and update.metrics["bytes_from_site"] > 0
    if dp_noise:  # Flower's fixed-clipping wrapper composed each release into its own accountant
        assert all(math.isfinite(e) and e > 0 for e in spent) and spent[1] > spent[0]
        assert float(weights["w"].numpy().std()) > 0  # the noise reached the model
    else:
        assert spent == [None, None] and float(weights["w"].numpy().max()) == 0.0
