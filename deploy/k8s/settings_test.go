package k8s

import (
	"errors"
	"time"

	"github.com/capstream/capstream/internal/config"
	svc "github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// The binaries' settings structs live in package main; these mirror them
// with the components' real section types (cmd/capstream/{router,producer,
// sink}.go). TestBinaryCheck runs the real binary on the same inputs, so a
// drift between the two shows up there.

type routerSettings struct {
	Kube   router.KubeConfig `yaml:"kube"`
	NATS   router.NATSConfig `yaml:"nats"`
	Log    svc.LogConfig     `yaml:"log"`
	HTTP   svc.HTTPConfig    `yaml:"http"`
	Router router.Config     `yaml:"router"`
}

func (s *routerSettings) Validate() error {
	return errors.Join(s.Kube.Validate(), s.NATS.Validate(), s.Log.Validate(), s.Router.Validate())
}

type producerSettings struct {
	Node     string              `yaml:"node"`
	NATS     producer.NATSConfig `yaml:"nats"`
	Log      svc.LogConfig       `yaml:"log"`
	HTTP     svc.HTTPConfig      `yaml:"http"`
	Producer producer.Config     `yaml:"producer"`
}

func (s *producerSettings) Validate() error {
	s.Producer.Node, s.Producer.NATS = s.Node, s.NATS
	return errors.Join(s.Log.Validate(), s.Producer.Validate())
}

type sinkPcapSettings struct {
	Log        svc.LogConfig         `yaml:"log"`
	HTTP       svc.HTTPConfig        `yaml:"http"`
	NATS       sink.NATSConfig       `yaml:"nats"`
	ClickHouse sink.ClickHouseConfig `yaml:"clickhouse"`
	S3         sink.S3Config         `yaml:"s3"`
	Pcap       pcapstore.Config      `yaml:"pcap"`
}

func (s *sinkPcapSettings) Validate() error {
	s.Pcap.S3 = s.S3
	return errors.Join(s.Log.Validate(), s.NATS.Validate(), s.ClickHouse.Validate(), s.Pcap.Validate())
}

type sinkFlowsSettings struct {
	Log        svc.LogConfig         `yaml:"log"`
	HTTP       svc.HTTPConfig        `yaml:"http"`
	NATS       sink.NATSConfig       `yaml:"nats"`
	ClickHouse sink.ClickHouseConfig `yaml:"clickhouse"`
	Flows      flowstore.Config      `yaml:"flows"`
}

func (s *sinkFlowsSettings) Validate() error {
	return errors.Join(s.Log.Validate(), s.NATS.Validate(), s.ClickHouse.Validate(), s.Flows.Validate())
}

// loaded is what the manifests must agree with in a component's effective
// configuration.
type loaded struct {
	listen    string
	natsURL   string
	credsFile string
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
	load       func(path string, env []string) (loaded, error)
}

var components = []component{
	{
		name: "router", kind: "Deployment", replicas: 2, subcommand: []string{"router"},
		envPrefix: "CAPSTREAM_ROUTER", configKey: "router.yaml", sa: "capstream-router",
		load: func(path string, env []string) (loaded, error) {
			s := &routerSettings{Kube: router.DefaultKubeConfig(), NATS: router.DefaultNATSConfig(),
				Log: svc.LogConfig{Level: "info", Format: "auto"}, HTTP: svc.HTTPConfig{Listen: ":8080"}, Router: router.DefaultConfig()}
			err := config.Load(path, "CAPSTREAM_ROUTER", env, s)
			return loaded{listen: s.HTTP.Listen, natsURL: s.NATS.URL, credsFile: s.NATS.CredsFile, grace: s.Router.GracePeriod, minMemory: 128 * mib, settings: s}, err
		},
	},
	{
		name: "sink-pcap", kind: "Deployment", replicas: 2, subcommand: []string{"sink", "pcap"},
		envPrefix: "CAPSTREAM_SINK_PCAP", configKey: "sink-pcap.yaml", sa: "capstream-sink",
		load: func(path string, env []string) (loaded, error) {
			s := &sinkPcapSettings{Log: svc.LogConfig{Level: "info", Format: "auto"}, HTTP: svc.HTTPConfig{Listen: ":8080"},
				NATS: sink.NATSConfig{URL: "nats://127.0.0.1:4222", Name: "capstream-sink-pcap"}, ClickHouse: sink.DefaultClickHouseConfig(), Pcap: pcapstore.DefaultConfig()}
			err := config.Load(path, "CAPSTREAM_SINK_PCAP", env, s)
			// Open and uploading objects, the pull buffer and one batch.
			need := s.Pcap.MaxBufferedBytes + int64(s.Pcap.Consumer.PullMaxBytes) + schemas.MaxBatchBytes
			return loaded{listen: s.HTTP.Listen, natsURL: s.NATS.URL, credsFile: s.NATS.CredsFile, grace: s.Pcap.GracePeriod, minMemory: need, settings: s}, err
		},
	},
	{
		name: "sink-flows", kind: "Deployment", replicas: 2, subcommand: []string{"sink", "flows"},
		envPrefix: "CAPSTREAM_SINK_FLOWS", configKey: "sink-flows.yaml", sa: "capstream-sink",
		load: func(path string, env []string) (loaded, error) {
			s := &sinkFlowsSettings{Log: svc.LogConfig{Level: "info", Format: "auto"}, HTTP: svc.HTTPConfig{Listen: ":8080"},
				NATS: sink.NATSConfig{URL: "nats://127.0.0.1:4222", Name: "capstream-sink-flows"}, ClickHouse: sink.DefaultClickHouseConfig(), Flows: flowstore.DefaultConfig()}
			err := config.Load(path, "CAPSTREAM_SINK_FLOWS", env, s)
			// Open flows at ~0.5 KiB each plus the pull buffer.
			need := int64(s.Flows.MaxFlows)*512 + int64(s.Flows.Consumer.PullMaxBytes)
			return loaded{listen: s.HTTP.Listen, natsURL: s.NATS.URL, credsFile: s.NATS.CredsFile, grace: s.Flows.GracePeriod, minMemory: need, settings: s}, err
		},
	},
	{
		name: "producer", kind: "DaemonSet", subcommand: []string{"producer"},
		envPrefix: "CAPSTREAM_PRODUCER", configKey: "producer.yaml", sa: "capstream-producer", root: true,
		load: func(path string, env []string) (loaded, error) {
			p := producer.DefaultConfig()
			s := &producerSettings{NATS: p.NATS, Log: svc.LogConfig{Level: "info", Format: "auto"}, HTTP: svc.HTTPConfig{Listen: ":8080"}, Producer: p}
			err := config.Load(path, "CAPSTREAM_PRODUCER", env, s)
			// The 64 MiB process target plus at least one ring.
			need := 64*mib + int64(s.Producer.AFPacket.RingBytes)
			return loaded{listen: s.HTTP.Listen, natsURL: s.NATS.URL, credsFile: s.NATS.CredsFile, grace: s.Producer.GracePeriod, minMemory: need, settings: s}, err
		},
	},
}
