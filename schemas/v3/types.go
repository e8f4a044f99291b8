package v3

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PacketCapture asks for the traffic of the workload endpoints its selector
// picks in its own namespace to be captured, from startTime until endTime or
// deletion.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
type PacketCapture struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PacketCaptureSpec   `json:"spec,omitempty"`
	Status PacketCaptureStatus `json:"status,omitempty"`
}

// PacketCaptureSpec is Calico's spec, unchanged.
type PacketCaptureSpec struct {
	// Selector is a Calico selector over the workload endpoints of the
	// capture's namespace. Empty means all().
	Selector string `json:"selector,omitempty"`
	// Filters restrict what is captured. Rules are OR'ed; within a rule the
	// protocol and the ports are AND'ed; ports are OR'ed. No filters means
	// all traffic.
	Filters []PacketCaptureRule `json:"filters,omitempty"`
	// StartTime delays the capture; absent or past means now.
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// EndTime stops the capture; absent means until the resource is deleted.
	EndTime *metav1.Time `json:"endTime,omitempty"`
}

// PacketCaptureRule is one filter rule.
type PacketCaptureRule struct {
	// Protocol is a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or an IP
	// protocol number 0-255.
	Protocol *intstr.IntOrString `json:"protocol,omitempty"`
	// Ports are port numbers or "lo:hi" ranges. They apply to protocols
	// with ports (TCP, UDP, SCTP, UDPLite).
	Ports []intstr.IntOrString `json:"ports,omitempty"`
}

// PacketCaptureState is the state of a capture on one node.
type PacketCaptureState string

// The states of Calico's status.files[].state.
const (
	StateScheduled         PacketCaptureState = "Scheduled"
	StateWaitingForTraffic PacketCaptureState = "WaitingForTraffic"
	StateCapturing         PacketCaptureState = "Capturing"
	StateFinished          PacketCaptureState = "Finished"
	StateError             PacketCaptureState = "Error"
)

// Condition types written by the router.
const (
	// ConditionReady is True while the capture is valid and its commands
	// are published.
	ConditionReady = "Ready"
	// ConditionError is True when the spec is invalid or a node reports an
	// error; its message says which.
	ConditionError = "Error"
)

// PacketCaptureStatus keeps Calico's files list and adds capstream's
// counters and conditions.
type PacketCaptureStatus struct {
	// Files has one entry per node that captures or captured.
	Files []PacketCaptureFile `json:"files,omitempty"`

	// Packets is the number of packets captured on all nodes.
	Packets int64 `json:"packets,omitempty"`
	// Bytes is the number of captured bytes on all nodes.
	Bytes int64 `json:"bytes,omitempty"`
	// Drops counts packets lost on all nodes: kernel ring drops plus
	// batches the producer could not publish.
	Drops int64 `json:"drops,omitempty"`
	// Objects is the number of completed pcap objects.
	Objects int64 `json:"objects,omitempty"`
	// ObservedGeneration is the spec generation the router last acted on.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions are Ready and Error.
	//
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PacketCaptureFile describes the capture on one node.
type PacketCaptureFile struct {
	// Node is the node's name.
	Node string `json:"node,omitempty"`
	// Directory is the object-store prefix the node's pcaps are under,
	// s3://bucket/prefix/namespace/name/node/.
	Directory string `json:"directory,omitempty"`
	// FileNames are the most recent object names below Directory: at most
	// 256, fewer when the capture spans many nodes, so the resource stays
	// far below etcd's size limit. Objects counts them all; the
	// pcap_objects table and the bucket list every one.
	FileNames []string `json:"fileNames,omitempty"`
	// Objects is the number of completed pcap objects on this node.
	Objects int64 `json:"objects,omitempty"`
	// State is the capture's state on this node.
	State *PacketCaptureState `json:"state,omitempty"`

	// Packets captured on this node.
	Packets int64 `json:"packets,omitempty"`
	// Bytes captured on this node.
	Bytes int64 `json:"bytes,omitempty"`
	// Drops on this node (kernel and publish).
	Drops int64 `json:"drops,omitempty"`
	// LastError is the node's last error, if any.
	LastError string `json:"lastError,omitempty"`
}

// PacketCaptureList is a list of PacketCaptures.
//
// +kubebuilder:object:root=true
type PacketCaptureList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PacketCapture `json:"items"`
}
