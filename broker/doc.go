// Design notes
//
// Concurrency. One mutex (Broker.mu) guards sessions, subscriptions, groups and retained messages;
// each connection has a reader goroutine (decode, then handle under the lock) and a writer goroutine
// fed by a queue. Nothing blocks on I/O under the lock: store writes are submitted to the committer
// and network writes to the connection's queue.
//
// Frames. readFrame reads the fixed header itself and refuses a declared size above MaxPacketSize
// before allocating the body; paho.golang/packets (v5) or mochi-mqtt's packets (3.1.1, v3.go) only
// decode bytes already read.
//
// MQTT 3.1.1. A CONNECT with protocol level 4 makes the connection 3.1.1 (conn.v3): its packets are
// translated to the v5 form on reading and back on writing (v3.go), so the session and routing
// core is the same for both versions. See v3.go for the mapping and the choice of codec.
//
// Storage. With Options.DataDir the state lives in one append-only log, mqbroker.log (logstore.go):
// sessions, per-session and per-group message entries (with packet id and state), QoS 2 inbound
// packet ids and retained messages, under a header carrying the format version. A commit appends one
// checksummed record and makes it durable with one fdatasync into zeros written ahead, so that the
// flush carries no journal commit; the log is rewritten from the live records at every start and when
// it has doubled. The broker keeps all of this in memory and reads the store only at start, which
// is all a log needs. Format 1 was one bbolt file (two fdatasyncs per transaction, pages then meta
// page, and whole 4 KiB pages rewritten for a few small records: the durable broker then delivered
// about 0.6x what it delivers in memory); such a directory is migrated at the first start. pebble
// (one WAL fsync per batch) was weighed too: a large dependency tree with background compactions
// on 2 cores, for a store that is never read while the broker runs. Group commit: every change is
// submitted as a batch to the committer goroutine, which applies everything pending in one
// transaction (one record and one fdatasync for many publishes) and then runs the batches' callbacks in order. A PUBACK/PUBREC, SUBACK and PUBCOMP is
// sent only from such a callback, so an acknowledged message or subscription is on disk. Messages to
// subscribers are sent after the commit that stored them; a QoS 2 packet id is durable before the
// PUBLISH carrying it is written. What only spares a redelivery is stored lazily (submitLazy): a
// subscriber's PUBACK/PUBREC/PUBCOMP and the sends that follow it ride along with the next commit
// that someone waits for (after 50 ms at most when none comes), never with an fsync of their own; a
// crash before then sends those messages again (at least once). A QoS 1 message sent from a stored
// session queue is not rewritten with its packet id: after a crash it is sent again as a new
// PUBLISH. So a QoS 1 delivery costs the store one put (with the publish) and one delete. Without a
// data directory nothing waits. A failed commit is answered 0x80: a refused QoS 2 PUBLISH frees its
// packet id, a refused SUBSCRIBE is taken back, a PUBREL whose release of the packet id fails gets
// no PUBCOMP (the connection ends and the client sends the PUBREL again). A session is stored with an offline time only while it has no connection: a session connected at a
// crash counts its expiry and delayed will from the restart.
//
// Shared subscriptions. A group delivers round robin over connected members that have send quota
// (messages in flight and queued, those waiting for their commit included, below the member's
// Receive Maximum); with none available the message waits in the group's queue and goes to the first
// member that has quota, including one that connects later. When a member's connection breaks, its
// unsent group messages and its in-flight QoS 1 group messages go back to the group at once and on to
// another member (MQTT v5 §4.8.2 allows it; the first member may still have processed them: at least
// once). In-flight QoS 2 messages stay with the member's session, which must complete them (exactly
// once). A member that unsubscribes gives back its unsent group messages and completes every
// in-flight one, QoS 1 and 2 [MQTT-3.10.4-3]. A group whose members all left keeps its messages for the next member. With a data
// directory, a group message held by a member whose session is not persistent stays stored under the
// group until acknowledged: after a crash it goes to another member (that session could not survive
// the crash anyway), so a QoS 2 group message may then be delivered twice.
//
// Limits. MaxSessionQueue bounds the QoS 1/2 messages a session holds, MaxGroupQueue a group's queue,
// MaxQueuedBytes the memory of all queued messages together, MaxRetained the retained messages, MaxQoS0Buffered the QoS 0 messages waiting for one connection
// (beyond it QoS 0 is dropped and counted, retained QoS 0 messages sent for a SUBSCRIBE included). A QoS 1/2 publish that would exceed any subscriber's or
// group's limit is refused as a whole (PUBACK/PUBREC 0x97) before anything is queued, so nothing
// acknowledged is dropped. A slow subscriber therefore affects only publishers of topics it
// subscribes to, and only once its own queue is full; other subscribers and topics are unaffected.
// Memory is bounded by roughly MaxConnections × (ReceiveMaximum + MaxQoS0Buffered) × MaxPacketSize
// for connections, plus MaxQueuedBytes for stored messages, plus MaxRetained × MaxPacketSize, plus
// MaxSessions small session records; with a data directory the log store keeps its own encoded copy
// of the stored ones (up to about as much again: the price of a store never read while running).
//
// Topic aliases (alias.go). A client's aliases are resolved by the reader before anything else
// looks at the PUBLISH (TopicAliasMaximum, announced in CONNACK); the broker's own (TopicAliasOut,
// off by default) are assigned by the writer, the one place that sees PUBLISHes in wire order, so
// an alias is always defined on the wire before it is used alone; a resend on a new connection
// starts from an empty table and carries its topic. Neither table outlives its connection.
//
// Overlapping subscriptions (overlap.go). OverlapDelivery single merges a session's non-shared
// targets in route into one entry (highest QoS, every subscription identifier); the extra
// identifiers are stored with the entry. paho's Properties holds one identifier, so such a PUBLISH
// is encoded by multiIDPublish, in a ControlPacket of type 0 whose flags carry the PUBLISH byte.
//
// Authorization. Authorizer decides per topic and client; TopicRules (acl.go) is the rule set the
// command line can express today (deny subscribe by overlapping filter, deny publish by match).
//
// Transports. A connection is any net.Conn: TCP (Addr), TLS (TLSAddr with TLSConfig), and MQTT over
// WebSocket (websocket.go: WSAddr, WSSAddr with TLSConfig, WebSocketHandler for an HTTP server of
// one's own). The WebSocket upgrade requires the subprotocol "mqtt" ("mqttv3.1" is accepted too) and
// answers 400 without it, 503 beyond the connection bound; after it, wsConn turns binary messages
// into the byte stream readPacket parses (gorilla/websocket streams frames into the reader's buffer,
// never allocating by a frame's declared length), so packets may be split across frames or packed
// into one [MQTT-6.0.0-2] and every limit is the TCP path's; a text frame closes the connection with
// close code 1003 [MQTT-6.0.0-1]. Each Write of the connection's writer is one binary message.
package broker
