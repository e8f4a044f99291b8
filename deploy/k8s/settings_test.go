package k8s

import (
	"time"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/natsauth"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// The ConfigMaps are loaded into the services' own Settings types (each in
// its component's package), the same values `capstream <service> --check`
// loads; TestBinaryCheck runs the real binary on the same inputs.

// loaded is what the manifests must agree with in a component's effective
// configuration.
type loaded struct {
	listen string
	// apiListen is the listener of a component that serves an API of its
	// own besides http.listen (the access API's access.listen), else "".
	apiListen string
	nats      clients.NATSConfig
	grace     time.Duration
	// minMemory is the least memory limit the configuration needs.
	minMemory int64
	settings  any
}

// component describes one workload and how to load its configuration.
type component struct {
	name       string // app.kubernetes.io/component, and capstream-<name>
	kind       string
	replicas   int32
	subcommand []string
	envPrefix  string
	configKey  string
	sa         string
	root       bool // needs uid 0 for its added capabilities
	// kubeAPI: its pod mounts a service-account token to call the
	// Kubernetes API.
	kubeAPI bool
	// noNATS: it never connects to NATS (the access API).
	noNATS bool
	// identity is who it connects to NATS as.
	identity schemas.Identity
	// tlsSecret is the kubernetes.io/tls Secret holding the certificate of
	// the API it serves, mounted read-only; "" for none.
	tlsSecret string
	// secretKeys are the keys of its own Secret,
	// capstream-<name>-credentials, by environment variable.
	secretKeys map[string]string
	load       func(path string, env []string) (loaded, error)
}

var components = []component{
	{
		name: "router", kind: "Deployment", replicas: 2, subcommand: []string{"router"},
		envPrefix: "CAPSTREAM_ROUTER", configKey: "router.yaml", sa: "capstream-router", kubeAPI: true,
		identity:   schemas.RouterIdentity(),
		secretKeys: map[string]string{"CAPSTREAM_ROUTER_NATS_PASSWORD": "nats-password"},
		load: func(path string, env []string) (loaded, error) {
			s := router.DefaultSettings()
			err := config.Load(path, router.EnvPrefix, env, s)
			return loaded{listen: s.HTTP.Listen, nats: s.NATS, grace: s.Router.GracePeriod, minMemory: 128 * mib, settings: s}, err
		},
	},
	{
		name: "sink-pcap", kind: "Deployment", replicas: 2, subcommand: []string{"sink", "pcap"},
		envPrefix: "CAPSTREAM_SINK_PCAP", configKey: "sink-pcap.yaml", sa: "capstream-sink",
		identity: schemas.PcapSinkIdentity(),
		secretKeys: map[string]string{
			"CAPSTREAM_SINK_PCAP_NATS_PASSWORD":       "nats-password",
			"CAPSTREAM_SINK_PCAP_CLICKHOUSE_USERNAME": "clickhouse-username",
			"CAPSTREAM_SINK_PCAP_CLICKHOUSE_PASSWORD": "clickhouse-password",
			"CAPSTREAM_SINK_PCAP_S3_ACCESSKEY":        "s3-access-key",
			"CAPSTREAM_SINK_PCAP_S3_SECRETKEY":        "s3-secret-key",
		},
		load: func(path string, env []string) (loaded, error) {
			s := pcapstore.DefaultSettings()
			err := config.Load(path, pcapstore.EnvPrefix, env, s)
			// Open and uploading objects, the pull buffer and one batch.
			need := s.Pcap.MaxBufferedBytes + int64(s.Pcap.Consumer.PullMaxBytes) + schemas.MaxBatchBytes
			return loaded{listen: s.HTTP.Listen, nats: s.NATS, grace: s.Pcap.GracePeriod, minMemory: need, settings: s}, err
		},
	},
	{
		name: "sink-flows", kind: "Deployment", replicas: 2, subcommand: []string{"sink", "flows"},
		envPrefix: "CAPSTREAM_SINK_FLOWS", configKey: "sink-flows.yaml", sa: "capstream-sink",
		identity: schemas.FlowSinkIdentity(),
		secretKeys: map[string]string{
			"CAPSTREAM_SINK_FLOWS_NATS_PASSWORD":       "nats-password",
			"CAPSTREAM_SINK_FLOWS_CLICKHOUSE_USERNAME": "clickhouse-username",
			"CAPSTREAM_SINK_FLOWS_CLICKHOUSE_PASSWORD": "clickhouse-password",
		},
		load: func(path string, env []string) (loaded, error) {
			s := flowstore.DefaultSettings()
			err := config.Load(path, flowstore.EnvPrefix, env, s)
			// Open flows at ~0.5 KiB each plus the pull buffer.
			need := int64(s.Flows.MaxFlows)*512 + int64(s.Flows.Consumer.PullMaxBytes)
			return loaded{listen: s.HTTP.Listen, nats: s.NATS, grace: s.Flows.GracePeriod, minMemory: need, settings: s}, err
		},
	},
	{
		name: "producer", kind: "DaemonSet", subcommand: []string{"producer"},
		envPrefix: "CAPSTREAM_PRODUCER", configKey: "producer.yaml", sa: "capstream-producer", root: true,
		// The node podEnv's spec.nodeName stands for; the identity is what
		// nats-auth grants the pod's token.
		identity:   mustProducerIdentity(podNode),
		secretKeys: map[string]string{},
		load: func(path string, env []string) (loaded, error) {
			s := producer.DefaultSettings()
			err := config.Load(path, producer.EnvPrefix, env, s)
			// The 64 MiB process target plus the whole ring budget.
			need := 64*mib + s.Producer.MaxRingBytes
			return loaded{listen: s.HTTP.Listen, nats: s.NATS, grace: s.Producer.GracePeriod, minMemory: need, settings: s}, err
		},
	},
	{
		name: "nats-auth", kind: "Deployment", replicas: 2, subcommand: []string{"nats-auth"},
		envPrefix: "CAPSTREAM_NATSAUTH", configKey: "nats-auth.yaml", sa: "capstream-nats-auth", kubeAPI: true,
		identity: schemas.Identity{User: natsauth.User, Subscribe: natsauth.SubscribeAllow()},
		secretKeys: map[string]string{
			"CAPSTREAM_NATSAUTH_NATS_PASSWORD":      "nats-password",
			"CAPSTREAM_NATSAUTH_CALLOUT_ISSUERSEED": "issuer-seed",
		},
		load: func(path string, env []string) (loaded, error) {
			s := natsauth.DefaultSettings()
			err := config.Load(path, natsauth.EnvPrefix, env, s)
			// client-go, one connection and the pending requests.
			return loaded{listen: s.HTTP.Listen, nats: s.NATS, minMemory: 32 * mib, settings: s}, err
		},
	},
	{
		name: "access", kind: "Deployment", replicas: 2, subcommand: []string{"access"},
		envPrefix: "CAPSTREAM_ACCESS", configKey: "access.yaml", sa: "capstream-access", kubeAPI: true, noNATS: true,
		tlsSecret: "capstream-access-tls",
		secretKeys: map[string]string{
			"CAPSTREAM_ACCESS_CLICKHOUSE_USERNAME": "clickhouse-username",
			"CAPSTREAM_ACCESS_CLICKHOUSE_PASSWORD": "clickhouse-password",
			"CAPSTREAM_ACCESS_S3_ACCESSKEY":        "s3-access-key",
			"CAPSTREAM_ACCESS_S3_SECRETKEY":        "s3-secret-key",
		},
		load: func(path string, env []string) (loaded, error) {
			s := access.DefaultSettings()
			err := config.Load(path, access.EnvPrefix, env, s)
			// client-go, the review cache, and per download or merge a
			// 64 KiB buffer and up to maxMergeObjects S3 streams: room for
			// a few dozen at once. Run gives downloads 5s after SIGTERM.
			return loaded{listen: s.HTTP.Listen, apiListen: s.Access.Listen, grace: 5 * time.Second, minMemory: 128 * mib, settings: s}, err
		},
	},
}

// accessTLSMount is where the access API mounts its tlsSecret.
const accessTLSMount = "/etc/capstream/access-tls"

// podNode is the node name podEnv gives spec.nodeName: with dots, so
// the node's subject token differs from its name.
const podNode = "worker-1.example.com"

func mustProducerIdentity(node string) schemas.Identity {
	id, err := schemas.ProducerIdentity(node)
	if err != nil {
		panic(err)
	}
	return id
}
