"""Real time over the WebSocket API: `api` answers what clients send (connect, subscribe),
`push` is the stream consumer that sends task changes and events to subscribers, `sender`
posts to connections through API Gateway's management API. Connections and subscriptions
are stored by store/connections.py."""
