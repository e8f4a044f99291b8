package router

import (
	"strings"
	"testing"
	"time"

	v3 "github.com/capstream/capstream/schemas/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func capture(mut func(*v3.PacketCapture)) *v3.PacketCapture {
	pc := &v3.PacketCapture{
		ObjectMeta: metav1.ObjectMeta{Name: "sample-capture", Namespace: "sample-namespace"},
		Spec:       v3.PacketCaptureSpec{Selector: `k8s-app == "sample-app"`},
	}
	if mut != nil {
		mut(pc)
	}
	return pc
}

func proto(p intstr.IntOrString) *intstr.IntOrString { return &p }

func TestValidatePacketCapture(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Hour))
	ports := func(ps ...intstr.IntOrString) []intstr.IntOrString { return ps }
	cases := map[string]struct {
		mut  func(*v3.PacketCapture)
		want []string // substrings of the error; none means valid
	}{
		"seed sample":    {nil, nil},
		"empty selector": {func(pc *v3.PacketCapture) { pc.Spec.Selector = "" }, nil},
		"all filter kinds": {func(pc *v3.PacketCapture) {
			pc.Spec.Filters = []v3.PacketCaptureRule{
				{Protocol: proto(intstr.FromString("TCP")), Ports: ports(intstr.FromInt32(80), intstr.FromString("8000:8080"))},
				{Protocol: proto(intstr.FromInt32(17)), Ports: ports(intstr.FromString("53"))},
				{Protocol: proto(intstr.FromString("ICMPv6"))},
				{Ports: ports(intstr.FromInt32(443))},
			}
			pc.Spec.StartTime, pc.Spec.EndTime = &t0, &t1
		}, nil},
		"bad selector": {func(pc *v3.PacketCapture) { pc.Spec.Selector = `k8s-app = "x"` },
			[]string{"spec.selector", "offset 8"}},
		"unknown protocol": {func(pc *v3.PacketCapture) {
			pc.Spec.Filters = []v3.PacketCaptureRule{{Protocol: proto(intstr.FromString("TCPX"))}}
		}, []string{"spec.filters[0].protocol", "TCPX"}},
		"protocol number too big": {func(pc *v3.PacketCapture) {
			pc.Spec.Filters = []v3.PacketCaptureRule{{Protocol: proto(intstr.FromInt32(256))}}
		}, []string{"spec.filters[0].protocol", "0-255"}},
		"range lo above hi": {func(pc *v3.PacketCapture) {
			pc.Spec.Filters = []v3.PacketCaptureRule{{Protocol: proto(intstr.FromString("TCP")), Ports: ports(intstr.FromString("90:80"))}}
		}, []string{"spec.filters[0].ports[0]", "low end above high end"}},
		"port out of range": {func(pc *v3.PacketCapture) {
			pc.Spec.Filters = []v3.PacketCaptureRule{{Protocol: proto(intstr.FromString("UDP")), Ports: ports(intstr.FromInt32(1), intstr.FromInt32(70000))}}
		}, []string{"spec.filters[0].ports[1]"}},
		"ports with ICMP": {func(pc *v3.PacketCapture) {
			pc.Spec.Filters = []v3.PacketCaptureRule{{Protocol: proto(intstr.FromString("ICMP")), Ports: ports(intstr.FromInt32(1))}}
		}, []string{"spec.filters[0].ports", "only to TCP, UDP, SCTP and UDPLite"}},
		"end before start": {func(pc *v3.PacketCapture) { pc.Spec.StartTime, pc.Spec.EndTime = &t1, &t0 },
			[]string{"spec.endTime", "must be after startTime"}},
		"end equals start": {func(pc *v3.PacketCapture) { pc.Spec.StartTime, pc.Spec.EndTime = &t0, &t0 },
			[]string{"spec.endTime"}},
		"hostile name": {func(pc *v3.PacketCapture) { pc.Name = "../../etc/passwd" },
			[]string{"metadata.name"}},
		"every problem reported": {func(pc *v3.PacketCapture) {
			pc.Spec.Selector = "has("
			pc.Spec.Filters = []v3.PacketCaptureRule{{Protocol: proto(intstr.FromString("bogus"))}}
		}, []string{"spec.selector", "spec.filters[0].protocol"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := ValidatePacketCapture(capture(tc.mut))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid capture rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("invalid capture accepted, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestTooManyFilters(t *testing.T) {
	pc := capture(func(pc *v3.PacketCapture) {
		for range maxFilters + 1 {
			pc.Spec.Filters = append(pc.Spec.Filters, v3.PacketCaptureRule{Protocol: proto(intstr.FromString("UDP"))})
		}
	})
	if err := ValidatePacketCapture(pc); err == nil || !strings.Contains(err.Error(), "spec.filters") {
		t.Errorf("error = %v, want too many filters", err)
	}
}
