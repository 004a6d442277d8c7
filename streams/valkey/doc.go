// Package valkey is footfall's distributed streams.Bus: every node of a
// deployment shares events, presence, today's visitors, event history and
// sessions through Valkey (or Redis 7), a single server or a Valkey
// Cluster, using github.com/valkey-io/valkey-go. It needs Valkey, or Redis
// 7.0 or later (sharded pub/sub, EVALSHA_RO).
//
// # Key layout
//
// The keys of one community c share the hash tag {c}, so every script that
// changes a community touches one hash slot and works on a cluster:
//
//	ff:{c}:m              HASH   e epoch, s seq, c time of the last presence
//	                             change (unix s), D/dn/dx start (ms), name and
//	                             key expiry (ms) of the current day
//	ff:{c}:v              HASH   visitor key ("u:id"/"a:id") -> live sources
//	ff:{c}:t              ZSET   "<visitor key>\0<source id>" -> deadline (ms)
//	                             of the sources with a TTL
//	ff:{c}:h:<lease>      SET    "<visitor key>\0<source id>" held by one
//	                             node lease (a connection on that node)
//	ff:{c}:l              STREAM event history: id "<seq>-<ms>", field p =
//	                             payload
//	ff:{c}:e              shard channel of the community's events
//	ff:{c}:d:<day>:u|a    SET    today's first 1000 visitors (of a kind)
//	ff:{c}:x:<day>:u|a:1..4 HLL  today's visitors beyond those, salted 1..4
//	ff:{c}:r:c            STRING visitor history: the records of the latest
//	                             minute, hour and day (history.go)
//	ff:{c}:r:<m|h|d>:<start ms>
//	                      STRING the record of an earlier minute, hour or
//	                             day, expiring with its step's retention
//	ff:{c}:w              HASH   webhook outbox (outbox.go): event id ->
//	                             "<unix s>:<type>:<data JSON>"
//	ff:{c}:wa             HASH   webhook event id -> deliveries tried
//	ff:{c}:wq:<suffix>    STRING marker: an EnqueueWebhook of that id
//	                             happened
//
// A few keys are global; only plain commands and single-key scripts touch
// them:
//
//	ff:ttl                ZSET   community -> earliest TTL deadline (ms), a
//	                             hint so reapers visit only communities
//	                             with something to expire
//	ff:leases             ZSET   lease -> expected expiry (ms)
//	ff:lease:<lease>      STRING node id, PX = lease TTL
//	ff:lease:<lease>:c    SET    communities where the lease holds sources
//	ff:sess:<id>          STRING "L" (live) or "R" (revoked), expiry in
//	                             ms, ":", the session's JSON; PXAT expiry+24h
//	ff:revoked            channel (classic pub/sub) of revoked session ids
//	ff:wh:due             ZSET   webhook event id -> due time (ms); a claim
//	                             moves it to the claim's end
//	ff:wh:born            ZSET   webhook event id -> when first indexed (ms)
//	ff:wh:v:<day>         SET    communities that had visitors that day
//	ff:wh:walk:<day>      STRING summary marker: the node walking the day's
//	                             summaries, or "done"
//
// The webhook keys exist only with Options.Webhooks.
//
// Payloads, on the channel and in the history alike, are
// "<seq>:<epoch>:<unix seconds or empty>:<event JSON>"; an event's ID is
// "<epoch>-<seq>", where epoch is a random string stored with the
// community, so ids are the same on every node and ids from before a data
// loss never match.
//
// # Presence
//
// A held source (TTL 0: a WebSocket or SSE connection) belongs to its node.
// The node refreshes one lease key every PresenceTTL/3, whatever its number
// of connections; the sources it holds sit in per-community sets named after
// the lease. When a lease lapses (its node died, or was cut off for longer
// than the TTL), the first reaper to notice runs one script per community
// that ends the lease's sources and publishes visitor_left once per visitor
// that leaves. A node never revives a lapsed lease: it notices the lapse at
// its next refresh, takes a new lease and re-registers the sources it holds
// (it keeps them in memory), so a reaper can never remove sources a live
// node holds under its current lease.
//
// Sources with a TTL (polls, the service API) have a deadline in ff:{c}:t;
// any node's reaper, or any operation on the community, ends them once
// their deadline passed.
//
// # Delivery
//
// A node subscribes to a community's channel while it has local
// subscribers for it (SSUBSCRIBE, one Receive per community). valkey-go's
// receive callback only parses and queues; one delivery goroutine calls the
// handlers, in Seq order per community, dropping duplicates. A gap in the
// sequence (messages lost while a connection was down) is filled from the
// history.
//
// # Outages
//
// When a connection drops, or a server restarts (its run id changes: the
// keeper compares them every PresenceTTL/3, so a cluster shard that lost its
// data is noticed even by nodes with nothing subscribed there), the keeper
// goroutine waits until Valkey answers, renews or replaces the node's
// lease, re-registers the node's held sources (set, not incremented: one
// summary presence event per community whose figures changed, no storm of
// joins; the event is marked Resync, and gateways fold the resyncs of all
// nodes for streams.ResyncSettle before they tell clients), raises each
// subscribed community's seq to at least the highest
// the node saw (so sequence numbers never go back after a data loss; ids
// change with the new epoch), waits for the subscriptions to be back, and
// calls the OnReconnect hooks so the gateway sends fresh snapshots.
//
// # Differences from the memory bus
//
//   - A held source belongs to the node that touched it: Leave it on that
//     node (elsewhere it ends when that node's lease lapses).
//   - Deadlines, days and event times use each node's Clock: clock skew
//     between nodes shifts TTL expiry by the skew.
//   - Today's visitors beyond 1000 of a kind are estimated (measured error
//     under 0.5% up to 20,000).
//   - History may keep more than the memory bus (each publish trims at most
//     32 old events), and is dropped an hour (historyIdle) after a
//     community's last event. Resuming after that, or after a data loss,
//     gets a snapshot.
//   - Revocations published while a node is cut off are not delivered to
//     it; OnReconnect tells the gateway to re-check open sessions.
//   - A day rollover counts a community's present visitors in one script:
//     fine for thousands, a noticeable pause for a community with 100,000
//     present at midnight.
package valkey
