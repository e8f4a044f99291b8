// Package v3 holds the projectcalico.org/v3 PacketCapture API types and the
// CustomResourceDefinition that serves them.
//
// The spec is Calico Enterprise's, field for field, so the same YAML applies
// to either system. The status keeps Calico's files list (one entry per node,
// with the object-store prefix as directory) and adds counters and
// conditions of capstream's own; the additions are optional fields, so
// Calico clients ignore them.
//
// What OpenAPI cannot check (selector syntax, port ranges with lo <= hi,
// startTime before endTime) is checked by router.ValidatePacketCapture, which
// the router and the CLI share. This package has no project imports; only the
// router and the CLI import it, so producers and sinks build without
// apimachinery.
//
// +kubebuilder:object:generate=true
// +groupName=projectcalico.org
package v3
