package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/retry"

	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// Condition reasons written by the router.
const (
	ReasonInvalidSpec = "InvalidSpec"
	ReasonCapturing   = "Capturing"
	ReasonNoEndpoints = "NoEndpoints"
	ReasonScheduled   = "Scheduled"
	ReasonFinished    = "Finished"
	ReasonNodeError   = "NodeError"
	ReasonSinkError   = "SinkError"
	ReasonNoError     = "NoError"
)

// maxConditionMessage keeps condition messages readable in kubectl and far
// below the API's 32 KiB limit.
const maxConditionMessage = 1024

// view is what the last reconcile concluded about a capture; together with
// the nodes' reports it is everything the status is made of.
type view struct {
	uid        string
	generation int64
	invalid    string // the validation error; empty when valid
	phase      Phase
	nodes      []string // nodes with a capture command, sorted
	endpoints  int
}

// nodeReports holds the latest report of each source for one node.
type nodeReports struct {
	producer, sink, flows *schemas.Status
}

// captureReports is the status consumer's state for one capture: the latest
// reports and the messages to ack once they are in the resource.
type captureReports struct {
	uid     string
	nodes   map[string]*nodeReports
	pending []jetstream.Msg
}

// book is the router's in-memory status state, shared by the status
// consumer (which adds reports) and the status worker (which writes them).
type book struct {
	mu       sync.Mutex
	views    map[captureKey]*view
	captures map[captureKey]*captureReports
}

func newBook() *book {
	return &book{views: map[captureKey]*view{}, captures: map[captureKey]*captureReports{}}
}

func (b *book) setView(k captureKey, v *view) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.views[k] = v
}

// hasEndpoints reports whether the last reconcile of k published commands
// with endpoints.
func (b *book) hasEndpoints(k captureKey) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := b.views[k]
	return v != nil && len(v.nodes) > 0
}

// add applies one report and holds msg for acking after the write. A
// report older than the one held is acked at once: reports are cumulative,
// so it carries nothing new.
func (b *book) add(k captureKey, s *schemas.Status, msg jetstream.Msg) (fresh bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.captures[k]
	if c == nil || c.uid != s.UID {
		// A new capture, or a report on a recreated one: the old reports
		// belong to an object that no longer exists.
		if c != nil {
			ackAll(c.pending)
		}
		c = &captureReports{uid: s.UID, nodes: map[string]*nodeReports{}}
		b.captures[k] = c
	}
	n := c.nodes[s.Node]
	if n == nil {
		n = &nodeReports{}
		c.nodes[s.Node] = n
	}
	slot := &n.producer
	switch s.Source {
	case schemas.SourcePcapSink:
		slot = &n.sink
	case schemas.SourceFlowSink:
		slot = &n.flows
	}
	if *slot != nil && s.Time.Before((*slot).Time) {
		return false
	}
	*slot = s
	c.pending = append(c.pending, msg)
	return true
}

// snapshot returns copies of what the status of k is computed from and
// takes the messages to ack after a successful write.
func (b *book) snapshot(k captureKey) (*view, map[string]nodeReports, string, []jetstream.Msg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var v *view
	if cur := b.views[k]; cur != nil {
		cp := *cur
		v = &cp
	}
	c := b.captures[k]
	if c == nil {
		return v, nil, "", nil
	}
	reports := make(map[string]nodeReports, len(c.nodes))
	for node, n := range c.nodes {
		reports[node] = *n
	}
	pending := c.pending
	c.pending = nil
	return v, reports, c.uid, pending
}

// giveBack returns messages whose write failed, to be acked by a later one.
func (b *book) giveBack(k captureKey, msgs []jetstream.Msg) {
	if len(msgs) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.captures[k]; c != nil {
		c.pending = append(msgs, c.pending...)
		return
	}
	ackAll(msgs)
}

// forget drops a deleted capture; its pending reports are acked because no
// resource is left to write them to.
func (b *book) forget(k captureKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.captures[k]; c != nil {
		ackAll(c.pending)
	}
	delete(b.captures, k)
	delete(b.views, k)
}

// reset drops everything at the end of a leadership term. Unacked reports
// are redelivered to the next leader.
func (b *book) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.views = map[captureKey]*view{}
	b.captures = map[captureKey]*captureReports{}
}

func ackAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		// An ack that fails is redelivered and applied again, which is
		// harmless for cumulative reports.
		_ = m.Ack()
	}
}

// BuildStatus computes a capture's status from its current status, the
// router's view and the latest node reports. It is pure, so it can be
// tested without a server and compared with the current status to skip
// writes that change nothing. Nodes that reported before (possibly to a
// previous router) keep their entries; reports overwrite the fields they
// own.
func buildStatus(pc *v3.PacketCapture, v *view, reports map[string]nodeReports, reportsUID string, now time.Time) v3.PacketCaptureStatus {
	st := *pc.Status.DeepCopy()
	files := map[string]*v3.PacketCaptureFile{}
	for i := range st.Files {
		f := st.Files[i]
		files[f.Node] = &f
	}
	entry := func(node string) *v3.PacketCaptureFile {
		f := files[node]
		if f == nil {
			f = &v3.PacketCaptureFile{Node: node}
			files[node] = f
		}
		return f
	}
	if reportsUID == string(pc.UID) {
		for node, r := range reports {
			applyReports(entry(node), r)
		}
	}
	valid := v != nil && v.uid == string(pc.UID)
	if valid && v.invalid == "" {
		switch v.phase {
		case PhaseScheduled:
			for _, node := range v.nodes {
				if f := entry(node); f.State == nil {
					f.State = statePtr(v3.StateScheduled)
				}
			}
		case PhaseFinished:
			// The end time is the router's to judge: once it passed, the
			// nodes were told to stop, whatever they last reported.
			for _, f := range files {
				if f.State == nil || *f.State != v3.StateError {
					f.State = statePtr(v3.StateFinished)
				}
			}
		}
	}
	st.Files = st.Files[:0]
	var nodeErrs []string
	st.Packets, st.Bytes, st.Drops, st.Objects = 0, 0, 0, 0
	for _, f := range files {
		st.Files = append(st.Files, *f)
		st.Packets += f.Packets
		st.Bytes += f.Bytes
		st.Drops += f.Drops
		st.Objects += max(f.Objects, int64(len(f.FileNames)))
		if f.State != nil && *f.State == v3.StateError {
			nodeErrs = append(nodeErrs, f.Node+": "+f.LastError)
		}
	}
	slices.SortFunc(st.Files, func(a, b v3.PacketCaptureFile) int { return strings.Compare(a.Node, b.Node) })
	if len(st.Files) == 0 {
		st.Files = nil
	}
	fitFiles(st.Files)
	slices.Sort(nodeErrs)
	var sinkErrs []string
	if reportsUID == string(pc.UID) {
		sinkErrs = sinkFailures(reports)
	}
	if !valid {
		// Conditions are written only from a reconcile of this very
		// object, never guessed from reports alone.
		return st
	}
	st.ObservedGeneration = v.generation
	ready := metav1.Condition{Type: v3.ConditionReady, ObservedGeneration: v.generation}
	failed := metav1.Condition{Type: v3.ConditionError, ObservedGeneration: v.generation}
	switch {
	case v.invalid != "":
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonInvalidSpec, "the spec is invalid; see the Error condition"
		failed.Status, failed.Reason, failed.Message = metav1.ConditionTrue, ReasonInvalidSpec, v.invalid
	default:
		switch {
		case v.phase == PhaseFinished:
			ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonFinished, "endTime has passed; every node was told to stop"
		case v.phase == PhaseScheduled:
			ready.Status, ready.Reason = metav1.ConditionTrue, ReasonScheduled
			ready.Message = fmt.Sprintf("starts at startTime; %d endpoints on %d nodes", v.endpoints, len(v.nodes))
		case v.endpoints == 0:
			ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonNoEndpoints, "the selector matches no running workload endpoint"
		default:
			ready.Status, ready.Reason = metav1.ConditionTrue, ReasonCapturing
			ready.Message = fmt.Sprintf("capturing on %d endpoints on %d nodes", v.endpoints, len(v.nodes))
		}
		switch {
		case len(nodeErrs) > 0:
			failed.Status, failed.Reason, failed.Message = metav1.ConditionTrue, ReasonNodeError, strings.Join(append(nodeErrs, sinkErrs...), "; ")
		case len(sinkErrs) > 0:
			failed.Status, failed.Reason, failed.Message = metav1.ConditionTrue, ReasonSinkError, strings.Join(sinkErrs, "; ")
		default:
			failed.Status, failed.Reason, failed.Message = metav1.ConditionFalse, ReasonNoError, "no error"
		}
	}
	for _, c := range []metav1.Condition{ready, failed} {
		c.Message = truncate(c.Message, maxConditionMessage)
		// SetStatusCondition keeps LastTransitionTime when the status did
		// not change, so an unchanged capture compares equal.
		c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
		meta.SetStatusCondition(&st.Conditions, c)
	}
	return st
}

// newFailure returns the Error condition of next when it reports a node
// or sink failure that prev did not (another reason, or another message),
// for an Event: kubectl describe and event-based alerting see a sink that
// starts terminating batches without reading the status. The events
// library folds repeats of one message.
func newFailure(prev, next v3.PacketCaptureStatus) *metav1.Condition {
	c := meta.FindStatusCondition(next.Conditions, v3.ConditionError)
	if c == nil || c.Status != metav1.ConditionTrue || (c.Reason != ReasonNodeError && c.Reason != ReasonSinkError) {
		return nil
	}
	if old := meta.FindStatusCondition(prev.Conditions, v3.ConditionError); old != nil && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
		return nil
	}
	return c
}

func statePtr(s v3.PacketCaptureState) *v3.PacketCaptureState { return &s }

// onStatus is the status consumer's handler: decode, file the report and
// schedule a coalesced write. Malformed reports are Termed and counted.
func (r *Router) onStatus(msg jetstream.Msg) {
	s, err := schemas.DecodeStatus(msg.Data())
	if err == nil {
		var key schemas.Key
		var src schemas.Source
		key, src, err = schemas.ParseStatusSubject(msg.Subject())
		switch {
		case err != nil:
		case key.Namespace != s.Namespace || key.Name != s.Name || key.Node != s.Node:
			err = fmt.Errorf("%w: subject %s does not match the report", schemas.ErrMalformed, msg.Subject())
		case src != s.Source:
			// Only the sink's identity may publish on a sink's subject:
			// a producer claiming to be a sink is refused here.
			err = fmt.Errorf("%w: subject %s is for %s reports, this one says %s", schemas.ErrMalformed, msg.Subject(), src, s.Source)
		}
	}
	if err != nil {
		r.metrics.statusReports.WithLabelValues("malformed").Inc()
		r.log.Warn("dropping status report", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	k := captureKey{s.Namespace, s.Name}
	if !r.inScope(k.Namespace) {
		r.metrics.statusReports.WithLabelValues("out_of_scope").Inc()
		_ = msg.Ack()
		return
	}
	pc, err := r.capture(k)
	if err != nil || string(pc.UID) != s.UID {
		// The capture is gone or was recreated: no resource to write to.
		r.metrics.statusReports.WithLabelValues("unknown_capture").Inc()
		_ = msg.Ack()
		return
	}
	if !r.book.add(k, s, msg) {
		r.metrics.statusReports.WithLabelValues("stale").Inc()
		_ = msg.Ack()
		return
	}
	r.metrics.statusReports.WithLabelValues("applied").Inc()
	r.enqueueStatus(k, r.cfg.StatusFlushDelay)
}

// writeStatus brings one capture's status up to date. It writes through
// the status subresource, so it never changes the generation and never
// triggers a reconcile that could publish; and it skips the write when
// nothing changed, so the informer's echo of its own write ends here.
func (r *Router) writeStatus(ctx context.Context, k captureKey) error {
	pc, err := r.capture(k)
	if apierrors.IsNotFound(err) {
		r.book.forget(k)
		return nil
	}
	if err != nil {
		return err
	}
	v, reports, uid, pending := r.book.snapshot(k)
	first := true
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			// The informer's copy lost the race: read the latest.
			u, err := r.deps.Dynamic.Resource(v3.Resource).Namespace(k.Namespace).Get(ctx, k.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if pc, err = fromUnstructured(u); err != nil {
				return err
			}
		}
		first = false
		st := buildStatus(pc, v, reports, uid, r.now())
		if apiequality.Semantic.DeepEqual(st, pc.Status) {
			r.metrics.statusWrites.WithLabelValues("unchanged").Inc()
			return nil
		}
		next := pc.DeepCopy()
		next.Status = st
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(next)
		if err != nil {
			return fmt.Errorf("convert %s: %w", k, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetAPIVersion(v3.SchemeGroupVersion.String())
		u.SetKind(v3.Kind)
		if _, err := r.deps.Dynamic.Resource(v3.Resource).Namespace(k.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			return err
		}
		r.metrics.statusWrites.WithLabelValues("written").Inc()
		if c := newFailure(pc.Status, st); c != nil {
			r.recorder.Event(pc, corev1.EventTypeWarning, c.Reason, c.Message)
		}
		return nil
	})
	if apierrors.IsNotFound(err) {
		ackAll(pending)
		r.book.forget(k)
		return nil
	}
	if err != nil {
		r.metrics.statusWrites.WithLabelValues("error").Inc()
		r.book.giveBack(k, pending)
		return fmt.Errorf("write status %s: %w", k, err)
	}
	ackAll(pending)
	return nil
}

// fromUnstructured converts the dynamic client's object to the typed one.
func fromUnstructured(u *unstructured.Unstructured) (*v3.PacketCapture, error) {
	pc := &v3.PacketCapture{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), pc); err != nil {
		return nil, fmt.Errorf("convert %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return pc, nil
}
