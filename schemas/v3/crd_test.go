package v3

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestCRDMatchesTypes keeps crd.yaml and types.go in step: every JSON field
// of the Go types has a schema property and the other way round.
func TestCRDMatchesTypes(t *testing.T) {
	crd, err := CRD()
	if err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Group != GroupName || crd.Spec.Names.Kind != Kind || crd.Spec.Names.Plural != Plural ||
		crd.Spec.Names.Singular != Singular || crd.Spec.Names.ListKind != ListKind || crd.Name != Plural+"."+GroupName {
		t.Errorf("crd names = %s %+v", crd.Name, crd.Spec.Names)
	}
	root := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	for _, part := range []struct {
		name string
		typ  reflect.Type
	}{{"spec", reflect.TypeOf(PacketCaptureSpec{})}, {"status", reflect.TypeOf(PacketCaptureStatus{})}} {
		compare(t, part.name, root.Properties[part.name], part.typ)
	}
}

var (
	timeType      = reflect.TypeOf(metav1.Time{})
	intOrString   = reflect.TypeOf(intstr.IntOrString{})
	conditionType = reflect.TypeOf(metav1.Condition{})
)

func compare(t *testing.T, path string, s apiextensionsv1.JSONSchemaProps, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch {
	case typ == timeType:
		if s.Type != "string" || s.Format != "date-time" {
			t.Errorf("%s: schema %s/%s, want string/date-time", path, s.Type, s.Format)
		}
	case typ == intOrString:
		if !s.XIntOrString {
			t.Errorf("%s: want x-kubernetes-int-or-string", path)
		}
	case typ.Kind() == reflect.Slice:
		if s.Type != "array" || s.Items == nil || s.Items.Schema == nil {
			t.Errorf("%s: schema type %q, want array with items", path, s.Type)
			return
		}
		compare(t, path+"[]", *s.Items.Schema, typ.Elem())
	case typ.Kind() == reflect.Struct:
		if s.Type != "object" {
			t.Errorf("%s: schema type %q, want object", path, s.Type)
		}
		var goFields, schemaFields []string
		fields := map[string]reflect.Type{}
		for i := range typ.NumField() {
			name := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]
			goFields = append(goFields, name)
			fields[name] = typ.Field(i).Type
		}
		for name := range s.Properties {
			schemaFields = append(schemaFields, name)
		}
		sort.Strings(goFields)
		sort.Strings(schemaFields)
		if diff := cmp.Diff(goFields, schemaFields); diff != "" {
			t.Errorf("%s: fields differ (-go +crd):\n%s", path, diff)
		}
		if typ == conditionType {
			return
		}
		for name, ft := range fields {
			if p, ok := s.Properties[name]; ok {
				compare(t, path+"."+name, p, ft)
			}
		}
	case typ.Kind() == reflect.String:
		if s.Type != "string" {
			t.Errorf("%s: schema type %q, want string", path, s.Type)
		}
	case typ.Kind() == reflect.Int64 || typ.Kind() == reflect.Int32:
		if s.Type != "integer" {
			t.Errorf("%s: schema type %q, want integer", path, s.Type)
		}
	default:
		t.Errorf("%s: no rule for Go type %s", path, typ)
	}
}

func TestDeepCopyIsIndependent(t *testing.T) {
	state := StateCapturing
	proto := intstr.FromString("TCP")
	now := metav1.Now()
	orig := &PacketCapture{
		Spec: PacketCaptureSpec{Selector: "all()", StartTime: &now,
			Filters: []PacketCaptureRule{{Protocol: &proto, Ports: []intstr.IntOrString{intstr.FromInt32(80)}}}},
		Status: PacketCaptureStatus{Files: []PacketCaptureFile{{Node: "a", FileNames: []string{"x"}, State: &state}},
			Conditions: []metav1.Condition{{Type: ConditionReady}}},
	}
	cp := orig.DeepCopy()
	if diff := cmp.Diff(orig, cp); diff != "" {
		t.Fatalf("copy differs:\n%s", diff)
	}
	cp.Spec.Filters[0].Ports[0] = intstr.FromInt32(443)
	*cp.Spec.Filters[0].Protocol = intstr.FromString("UDP")
	cp.Status.Files[0].FileNames[0] = "y"
	*cp.Status.Files[0].State = StateError
	cp.Status.Conditions[0].Type = ConditionError
	if orig.Spec.Filters[0].Ports[0].IntVal != 80 || orig.Spec.Filters[0].Protocol.StrVal != "TCP" ||
		orig.Status.Files[0].FileNames[0] != "x" || *orig.Status.Files[0].State != StateCapturing ||
		orig.Status.Conditions[0].Type != ConditionReady {
		t.Errorf("changing the copy changed the original: %+v", orig)
	}
}
