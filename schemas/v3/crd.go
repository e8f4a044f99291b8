package v3

import (
	_ "embed"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// CRDYAML is the PacketCapture CustomResourceDefinition as applied with
// kubectl (deploy/k8s carries the same bytes).
//
//go:embed crd.yaml
var CRDYAML []byte

// CRD returns the PacketCapture CustomResourceDefinition.
func CRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(CRDYAML, crd); err != nil {
		return nil, fmt.Errorf("decode embedded crd: %w", err)
	}
	return crd, nil
}
