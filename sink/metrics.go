package sink

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/run"
)

// Metrics are the counters both sinks keep, under their own names.
type Metrics struct {
	// Batches counts batches by result.
	Batches *prometheus.CounterVec
	// AckErrs counts failed acknowledgements by reason.
	AckErrs *prometheus.CounterVec
	// Pending is the number of batches held unacked.
	Pending prometheus.Gauge
	// Panics counts batches whose handling panicked.
	Panics prometheus.Counter
	// Failures counts batches terminated for good, by schemas.Failure*
	// reason.
	Failures *prometheus.CounterVec
	// LostBatches and LostPackets count what the stream's limits removed
	// before the sink got it (gaps in the batch sequence).
	LostBatches, LostPackets prometheus.Counter
	// Partitions, PartitionsHeld and Members are the packet partitions,
	// those this replica holds, and the replicas sharing them; Released
	// counts the partitions it handed to another replica.
	Partitions, PartitionsHeld, Members prometheus.Gauge
	Released                            prometheus.Counter
}

// newMetrics registers the runner's metrics and, with extra, the sink's own,
// all under capstream_sink_<component>_.
func newMetrics(reg prometheus.Registerer, component, batchesHelp, pendingHelp string, extra func(*run.Registrar)) (*Metrics, error) {
	prefix := "capstream_sink_" + component + "_"
	ms := run.NewRegistrar(reg, prefix)
	if extra != nil {
		extra(ms)
	}
	m := &Metrics{
		Batches: ms.CounterVec("batches_total", batchesHelp, "result"),
		AckErrs: ms.CounterVec("ack_errors_total", "Failed acknowledgements, by reason.", "reason"),
		Pending: ms.Gauge("pending_batches", pendingHelp),
		Panics:  ms.Counter("panics_total", "Batches whose handling panicked; each was terminated."),
		Failures: ms.CounterVec("failures_total", "Batches terminated because they can never be stored, by reason "+
			"(HandlerPanic, StorageRefused, DatabaseRefused, MalformedBatch).", "reason"),
		LostBatches:    ms.Counter("lost_batches_total", "Batches the producer published that the stream removed (MaxAge, MaxBytes) before the sink got them: gaps in the batch sequence."),
		LostPackets:    ms.Counter("lost_packets_total", "Packets of the lost batches, when their producer counts them (schemas.RunCounts)."),
		Partitions:     ms.Gauge("partitions", "Partitions of CAPSTREAM_PACKETS, one consumer each."),
		PartitionsHeld: ms.Gauge("partitions_held", "Partitions this replica holds: the server delivers each partition to one replica at a time."),
		Members:        ms.Gauge("group_members", "Replicas of this sink sharing the partitions, this one included, as last heard."),
		Released:       ms.Counter("partitions_released_total", "Partitions this replica released to another to even out the shares."),
	}
	return m, ms.Err()
}
