package schemas

import "fmt"

// Identity is what one kind of connection may do on the bus: the subjects it
// may publish to and subscribe to (everything else is denied), and the
// prefix of its reply inboxes, which only it may subscribe to. These lists
// are the contract between the components and the NATS server; a server is
// configured with them (static users in the dev pipeline, see pipeline) and
// a component connects with the matching InboxPrefix.
//
// JetStream is reached through subjects too, so the lists name its API
// calls one by one: which streams an identity may create or read, which
// consumers it may create, pull from and ack. A consumer filtered on one
// subject is created on $JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>,
// and the server checks that the filter in the subject is the consumer's,
// which is what confines a producer to its own node's commands.
type Identity struct {
	// User is the user name; it is also the connection name's stem.
	User string
	// Publish and Subscribe are the subjects allowed; the server denies the
	// rest.
	Publish, Subscribe []string
	// InboxPrefix is the prefix of the connection's reply subjects
	// (nats.CustomInboxPrefix). Subscribe allows InboxPrefix+".>" and no
	// other inbox, so one identity cannot read another's replies or the
	// messages pulled for it.
	InboxPrefix string
}

// User names of the fixed identities.
const (
	UserRouter   = "capstream-router"
	UserPcapSink = "capstream-sink-pcap"
	UserFlowSink = "capstream-sink-flows"
	UserMonitor  = "capstream-monitor"
	// userProducerPrefix is followed by the node's subject token.
	userProducerPrefix = "capstream-producer-"
)

// jsAPI is the JetStream API's subject prefix.
const jsAPI = "$JS.API."

func identity(user string, publish ...string) Identity {
	inbox := "_INBOX_" + user
	return Identity{User: user, Publish: publish, Subscribe: []string{inbox + ".>"}, InboxPrefix: inbox}
}

// RouterIdentity may publish commands, manage the three streams and every
// consumer on them (the router creates the sinks' durables and its own),
// and read and ack status reports. It cannot publish batches or reports.
func RouterIdentity() Identity {
	pub := []string{CommandSubjectsAll, jsAPI + "INFO", jsAPI + "CONSUMER.>"}
	for _, s := range []string{StreamCommands, StreamPackets, StreamStatus} {
		for _, op := range []string{"CREATE", "UPDATE", "INFO", "MSG.GET", "MSG.DELETE", "PURGE"} {
			pub = append(pub, jsAPI+"STREAM."+op+"."+s)
		}
		pub = append(pub, jsAPI+"DIRECT.GET."+s+".>")
	}
	pub = append(pub, "$JS.ACK."+StreamStatus+"."+ConsumerRouterStatus+".>")
	return identity(UserRouter, pub...)
}

// ProducerIdentity is one node's producer: it may publish batches and status
// reports of its own node only, and read its own node's commands only, with
// ordered consumers filtered on them. It cannot publish commands, read other
// nodes' commands, or read any batch.
func ProducerIdentity(node string) (Identity, error) {
	t, err := Token(node)
	if err != nil {
		return Identity{}, fmt.Errorf("producer identity: %w", err)
	}
	c := StreamCommands
	return identity(userProducerPrefix+t,
		packetPrefix+"*.*."+t,
		statusPrefix+"*.*."+t,
		jsAPI+"CONSUMER.CREATE."+c+".*."+commandPrefix+t+".>",
		jsAPI+"CONSUMER.MSG.NEXT."+c+".*",
		jsAPI+"CONSUMER.INFO."+c+".*",
		jsAPI+"CONSUMER.DELETE."+c+".*",
		jsAPI+"DIRECT.GET."+c+"."+commandPrefix+t+".>",
		// The resync lists the node's live command subjects with a
		// subject-filtered stream info (the server does not hold the
		// filter to the node: see DESIGN.md).
		jsAPI+"STREAM.INFO."+c,
	), nil
}

// sinkIdentity may read its own durables on CAPSTREAM_PACKETS, one per
// partition up to MaxPacketPartitions (bind, pull, ack, unpin), read the
// stream's configuration (its partitions), delete its unpartitioned
// durable of before partitions once that is empty, announce itself to its
// fellow replicas on its SinkGroupSubject and hear theirs, and publish its
// own kind of status report (ReportSubject) for any capture and node:
// never a producer's, nor the other sink's.
func sinkIdentity(user, durable string, source Source) Identity {
	p := StreamPackets
	group := SinkGroupSubject(source)
	id := identity(user,
		statusPrefix+"*.*.*."+string(source),
		group,
		jsAPI+"STREAM.INFO."+p,
		jsAPI+"CONSUMER.INFO."+p+"."+durable,
		jsAPI+"CONSUMER.DELETE."+p+"."+durable,
	)
	for i := range MaxPacketPartitions {
		d := SinkPartitionName(durable, i)
		id.Publish = append(id.Publish,
			jsAPI+"CONSUMER.CREATE."+p+"."+d+".>",
			jsAPI+"CONSUMER.INFO."+p+"."+d,
			jsAPI+"CONSUMER.MSG.NEXT."+p+"."+d,
			jsAPI+"CONSUMER.UNPIN."+p+"."+d,
			"$JS.ACK."+p+"."+d+".>",
		)
	}
	id.Subscribe = append(id.Subscribe, group)
	return id
}

// PcapSinkIdentity is the pcap sink's: its durable and status reports.
func PcapSinkIdentity() Identity { return sinkIdentity(UserPcapSink, ConsumerPcapSink, SourcePcapSink) }

// FlowSinkIdentity is the flow sink's: its durable and status reports.
func FlowSinkIdentity() Identity { return sinkIdentity(UserFlowSink, ConsumerFlowSink, SourceFlowSink) }

// MonitorIdentity reads the streams' and consumers' state, for `nats stream
// report`, `nats consumer report` and `nats server check jetstream`: no
// message, command or batch.
func MonitorIdentity() Identity {
	return identity(UserMonitor, jsAPI+"INFO", jsAPI+"STREAM.NAMES", jsAPI+"STREAM.LIST",
		jsAPI+"STREAM.INFO.*", jsAPI+"CONSUMER.NAMES.*", jsAPI+"CONSUMER.LIST.*", jsAPI+"CONSUMER.INFO.*.*")
}
