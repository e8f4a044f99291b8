package testenv

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	v3 "github.com/capstream/capstream/schemas/v3"
)

// CaptureObject is the PacketCapture ns/name with the selector sel, as the
// unstructured object a dynamic client creates.
func CaptureObject(ns, name, sel string) (*unstructured.Unstructured, error) {
	pc := &v3.PacketCapture{
		TypeMeta:   metav1.TypeMeta{APIVersion: v3.SchemeGroupVersion.String(), Kind: v3.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v3.PacketCaptureSpec{Selector: sel},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pc)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: u}, nil
}
