// The live connection: the hub's WebSocket (same origin; the session cookie authenticates it), reconnecting with
// backoff and resuming after the last event received.

export class LiveConnection {
  constructor({ onHello, onEvents, onState }) {
    this.onHello = onHello;
    this.onEvents = onEvents;
    this.onState = onState;
    this.runId = null;
    this.since = 1;
    this.delay = 500;
    this.closed = false;
    this.socket = null;
    this.open();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/`;
  }

  open() {
    if (this.closed) return;
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 500;
      this.onState("live");
    };
    socket.onmessage = (message) => this.receive(JSON.parse(message.data));
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.onState(event.code === 1008 || event.code === 4001 ? "signed out" : "reconnecting");
      if (!this.closed) setTimeout(() => this.open(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    };
  }

  receive(message) {
    if (message.type === "hello") {
      this.onHello(message);
      if (this.runId !== null) this.subscribe(this.runId, this.since);
    } else if (message.type === "events") {
      if (message.run_id !== this.runId) return;
      for (const event of message.events) this.since = Math.max(this.since, (event.seq || 0) + 1);
      this.onEvents(message.events);
    } else if (message.type === "coalesced") {
      // A slow connection lost batch-level samples; epochs and the run's end are never dropped.
    }
  }

  // Follow run_id from sequence number `since` (the hub replays what it kept, then streams live).
  subscribe(runId, since = 1) {
    this.runId = runId;
    this.since = since;
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "subscribe", run_id: runId, since }));
    }
  }

  unsubscribe() {
    this.runId = null;
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close();
  }
}
