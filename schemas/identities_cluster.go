package schemas

import "strings"

// UserClusterProducer is the one producer identity of a cluster deployed
// with static users (deploy/k8s): every node's producer connects as it.
const UserClusterProducer = "capstream-producer"

// clusterNodePlaceholder stands for the node while ProducerIdentity's
// subjects are built; it is a valid name, and no fixed token of any
// subject is equal to it, so exactly the node tokens are replaced.
const clusterNodePlaceholder = "capstream-cluster-node-placeholder"

// ClusterProducerIdentity is ProducerIdentity with the node token
// generalised to the '*' wildcard, for a DaemonSet whose pods all share one
// set of static credentials (a static user cannot be given per node): a
// producer may publish batches and status reports for any node, create
// ordered consumers filtered on any one node's commands (never unfiltered,
// never on another stream), pull and delete them, and read commands by
// subject. It still cannot publish a command, subscribe to anything but
// its own inbox, read a batch, or touch the other streams' consumers.
//
// Everything a node's producer may do, every other node's may too: the
// gap, and the per-node design that closes it, are in DESIGN.md
// ("Identities on the bus").
func ClusterProducerIdentity() Identity {
	node, err := ProducerIdentity(clusterNodePlaceholder)
	if err != nil {
		panic(err) // the placeholder is a constant, valid name
	}
	pub := make([]string, len(node.Publish))
	for i, s := range node.Publish {
		tokens := strings.Split(s, ".")
		for j, tok := range tokens {
			if tok == clusterNodePlaceholder {
				tokens[j] = "*"
			}
		}
		pub[i] = strings.Join(tokens, ".")
	}
	return identity(UserClusterProducer, pub...)
}
