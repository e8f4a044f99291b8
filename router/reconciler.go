package router

import (
	"maps"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/capstream/capstream/router/selector"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// Workload endpoint labels Calico adds to a pod's own labels.
const (
	LabelNamespace      = "projectcalico.org/namespace"
	LabelOrchestrator   = "projectcalico.org/orchestrator"
	LabelServiceAccount = "projectcalico.org/serviceaccount"
	// NamespaceLabelPrefix prefixes the namespace's labels on an endpoint.
	NamespaceLabelPrefix = "pcns."
	orchestratorK8s      = "k8s"
	ifaceHashDigits      = 11
)

// Phase is where a capture stands in its time window.
type Phase string

// Phases.
const (
	// PhaseScheduled: startTime is ahead; commands are published with it
	// so producers start on time even if the router is away then.
	PhaseScheduled Phase = "Scheduled"
	// PhaseActive: inside the window (or no window).
	PhaseActive Phase = "Active"
	// PhaseFinished: endTime has passed; every node is told to stop.
	PhaseFinished Phase = "Finished"
)

// Decision is what one capture should look like on the nodes.
type Decision struct {
	// Commands are the capture commands per node. A node that is not
	// listed must be stopped if it was told to capture before.
	Commands map[string]*schemas.Command
	// Phase is the capture's place in its time window.
	Phase Phase
	// RequeueAfter is when the phase changes next (start or end); zero if
	// it never does by the clock alone.
	RequeueAfter time.Duration
	// Endpoints is the number of endpoints matched on all nodes.
	Endpoints int
}

// Decide computes the desired per-node commands of a valid capture from
// the pods and the namespace of its namespace. It is pure: the caller passes
// the parsed selector, the pods (any pod in another namespace is ignored)
// and the clock.
func Decide(pc *v3.PacketCapture, sel *selector.Selector, ns *corev1.Namespace, pods []*corev1.Pod, cfg Config, now time.Time) Decision {
	d := Decision{Commands: map[string]*schemas.Command{}, Phase: PhaseActive}
	var start, end *time.Time
	if t := pc.Spec.StartTime; t != nil {
		s := t.UTC()
		start = &s
		if now.Before(s) {
			d.Phase = PhaseScheduled
			d.RequeueAfter = s.Sub(now)
		}
	}
	if t := pc.Spec.EndTime; t != nil {
		e := t.UTC()
		end = &e
		if !now.Before(e) {
			// Finished wins over Scheduled: an end before the start (which
			// validation rejects anyway) must not keep a capture pending.
			d.Phase, d.RequeueAfter = PhaseFinished, 0
			return d
		}
		if d.Phase == PhaseActive {
			d.RequeueAfter = e.Sub(now)
		}
	}
	filters := commandFilters(pc.Spec.Filters)
	for _, pod := range pods {
		if pod.Namespace != pc.Namespace || !IsEndpoint(pod) {
			continue
		}
		labels := EndpointLabels(pod, ns)
		if sel != nil && !sel.Evaluate(labels) {
			continue
		}
		node := pod.Spec.NodeName
		c := d.Commands[node]
		if c == nil {
			c = &schemas.Command{
				Version:    schemas.Version,
				Action:     schemas.ActionCapture,
				Namespace:  pc.Namespace,
				Name:       pc.Name,
				UID:        string(pc.UID),
				Generation: pc.Generation,
				Node:       node,
				Filters:    filters,
				SnapLength: cfg.SnapLength,
				StartTime:  start,
				EndTime:    end,
				IssuedAt:   now,
			}
			d.Commands[node] = c
		}
		if len(labels) > schemas.MaxLabels {
			// Labels only enrich records; an endpoint with too many to
			// carry is still captured.
			labels = nil
		}
		c.Endpoints = append(c.Endpoints, schemas.Endpoint{
			Pod:       pod.Name,
			Namespace: pod.Namespace,
			Interface: InterfaceName(cfg.InterfacePrefix, pod.Namespace, pod.Name),
			Labels:    labels,
		})
		d.Endpoints++
	}
	for _, c := range d.Commands {
		// Informer order is random; a stable order keeps equal states equal.
		slices.SortFunc(c.Endpoints, func(a, b schemas.Endpoint) int {
			if a.Pod < b.Pod {
				return -1
			} else if a.Pod > b.Pod {
				return 1
			}
			return 0
		})
	}
	return d
}

// IsEndpoint reports whether a pod has a Calico workload endpoint that can be
// captured: running, scheduled to a node and with its own network.
func IsEndpoint(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && !pod.Spec.HostNetwork && pod.Spec.NodeName != ""
}

// EndpointLabels returns the labels Calico gives the pod's workload
// endpoint: the namespace's labels prefixed "pcns.", the pod's own labels
// (which win over inherited ones, as in Calico) and Calico's own keys.
func EndpointLabels(pod *corev1.Pod, ns *corev1.Namespace) map[string]string {
	n := len(pod.Labels) + 3
	if ns != nil {
		n += len(ns.Labels)
	}
	labels := make(map[string]string, n)
	if ns != nil {
		for k, v := range ns.Labels {
			labels[NamespaceLabelPrefix+k] = v
		}
	}
	maps.Copy(labels, pod.Labels)
	labels[LabelNamespace] = pod.Namespace
	labels[LabelOrchestrator] = orchestratorK8s
	if sa := pod.Spec.ServiceAccountName; sa != "" {
		labels[LabelServiceAccount] = sa
	}
	return labels
}

// InterfaceName is Calico's host-side veth name for a pod:
// schemas.InterfaceName, the rule the demo and the tests build veths by.
func InterfaceName(prefix, namespace, pod string) string {
	return schemas.InterfaceName(prefix, namespace, pod)
}

// commandFilters converts the spec's rules to the wire form; the spec has
// been validated, so the conversion cannot fail.
func commandFilters(rules []v3.PacketCaptureRule) []schemas.Filter {
	if len(rules) == 0 {
		return nil
	}
	out := make([]schemas.Filter, 0, len(rules))
	for _, r := range rules {
		var f schemas.Filter
		if r.Protocol != nil {
			if p, err := ProtocolNumber(*r.Protocol); err == nil {
				f.Protocol = strconv.Itoa(int(p))
			}
		}
		for _, p := range r.Ports {
			f.Ports = append(f.Ports, PortString(p))
		}
		out = append(out, f)
	}
	return out
}

// StopCommand is the command that stops a capture on a node. It carries the
// UID and generation of the capture it stops so a producer never stops a
// recreated capture of the same name by mistake.
func StopCommand(namespace, name, uid string, generation int64, node string, now time.Time) *schemas.Command {
	return &schemas.Command{
		Version:    schemas.Version,
		Action:     schemas.ActionStop,
		Namespace:  namespace,
		Name:       name,
		UID:        uid,
		Generation: generation,
		Node:       node,
		IssuedAt:   now,
	}
}

// SameCommand reports whether two commands ask for the same state, ignoring
// when they were issued and how they were encoded (nil and empty lists,
// time zones).
func SameCommand(a, b *schemas.Command) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Action != b.Action || a.Namespace != b.Namespace || a.Name != b.Name || a.UID != b.UID || a.Node != b.Node {
		return false
	}
	if a.Action == schemas.ActionStop {
		// A stop is a stop; nothing else in it matters to a producer.
		return true
	}
	if a.Generation != b.Generation || a.SnapLength != b.SnapLength || !sameTime(a.StartTime, b.StartTime) || !sameTime(a.EndTime, b.EndTime) {
		return false
	}
	if !slices.EqualFunc(a.Filters, b.Filters, func(x, y schemas.Filter) bool {
		return x.Protocol == y.Protocol && slices.Equal(x.Ports, y.Ports)
	}) {
		return false
	}
	return slices.EqualFunc(a.Endpoints, b.Endpoints, func(x, y schemas.Endpoint) bool {
		return x.Pod == y.Pod && x.Namespace == y.Namespace && x.Interface == y.Interface && maps.Equal(x.Labels, y.Labels)
	})
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}
