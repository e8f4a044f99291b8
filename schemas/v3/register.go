package v3

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group Calico serves PacketCapture in.
const GroupName = "projectcalico.org"

// Names of the resource as the CRD registers them. kubectl resolves the
// singular, the plural and both with the group or its first letter.
const (
	Kind     = "PacketCapture"
	ListKind = "PacketCaptureList"
	Plural   = "packetcaptures"
	Singular = "packetcapture"
)

// SchemeGroupVersion is group projectcalico.org, version v3.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v3"}

// Resource is the GroupVersionResource clients use with dynamic and REST clients.
var Resource = SchemeGroupVersion.WithResource(Plural)

var (
	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds PacketCapture and PacketCaptureList to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &PacketCapture{}, &PacketCaptureList{})
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
