package router

import (
	"fmt"
	"strconv"

	"github.com/capstream/capstream/router/selector"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits on a spec, the same as the CRD's maxItems, so a capture read from a
// file without the API server is held to what the server would accept.
const (
	maxFilters        = 64
	maxPortsPerFilter = 64
)

// ValidatePacketCapture checks what the CRD's OpenAPI schema cannot: the
// selector's syntax, port ranges with lo <= hi, ports only with protocols
// that have them, and startTime before endTime. It also repeats the schema's
// own checks so a capture read from a file is judged as the API server
// would. The error lists every problem with its field path, or is nil.
func ValidatePacketCapture(pc *v3.PacketCapture) error {
	var errs field.ErrorList
	meta := field.NewPath("metadata")
	for _, msg := range validation.IsDNS1123Subdomain(pc.Name) {
		errs = append(errs, field.Invalid(meta.Child("name"), pc.Name, msg))
	}
	if pc.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(pc.Namespace) {
			errs = append(errs, field.Invalid(meta.Child("namespace"), pc.Namespace, msg))
		}
	}
	spec := field.NewPath("spec")
	if _, err := selector.Parse(pc.Spec.Selector); err != nil {
		errs = append(errs, field.Invalid(spec.Child("selector"), pc.Spec.Selector, err.Error()))
	}
	filters := spec.Child("filters")
	if len(pc.Spec.Filters) > maxFilters {
		errs = append(errs, field.TooMany(filters, len(pc.Spec.Filters), maxFilters))
	}
	for i, rule := range pc.Spec.Filters {
		errs = append(errs, validateRule(rule, filters.Index(i))...)
	}
	if s, e := pc.Spec.StartTime, pc.Spec.EndTime; s != nil && e != nil && !s.Before(e) {
		errs = append(errs, field.Invalid(spec.Child("endTime"), e.UTC().Format("2006-01-02T15:04:05Z07:00"),
			"must be after startTime "+s.UTC().Format("2006-01-02T15:04:05Z07:00")))
	}
	return errs.ToAggregate()
}

func validateRule(rule v3.PacketCaptureRule, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	proto := -1
	if rule.Protocol != nil {
		p, err := ProtocolNumber(*rule.Protocol)
		if err != nil {
			errs = append(errs, field.Invalid(path.Child("protocol"), rule.Protocol.String(), err.Error()))
		} else {
			proto = int(p)
		}
	}
	ports := path.Child("ports")
	if len(rule.Ports) > maxPortsPerFilter {
		errs = append(errs, field.TooMany(ports, len(rule.Ports), maxPortsPerFilter))
	}
	if len(rule.Ports) > 0 && proto >= 0 && !schemas.ProtocolHasPorts(uint8(proto)) {
		errs = append(errs, field.Invalid(ports, len(rule.Ports),
			fmt.Sprintf("ports apply only to TCP, UDP, SCTP and UDPLite, not to protocol %s", rule.Protocol.String())))
	}
	for j, port := range rule.Ports {
		if _, _, err := PortRange(port); err != nil {
			errs = append(errs, field.Invalid(ports.Index(j), port.String(), err.Error()))
		}
	}
	return errs
}

// ProtocolNumber resolves a filter's protocol, a name or a number, to the
// IP protocol number.
func ProtocolNumber(p intstr.IntOrString) (uint8, error) {
	if p.Type == intstr.Int {
		if p.IntVal < 0 || p.IntVal > 255 {
			return 0, fmt.Errorf("protocol number %d out of range 0-255", p.IntVal)
		}
		return uint8(p.IntVal), nil
	}
	return schemas.ParseProtocol(p.StrVal)
}

// PortRange resolves a filter's port, a number or "lo:hi", to a range.
func PortRange(p intstr.IntOrString) (lo, hi uint16, err error) {
	if p.Type == intstr.Int {
		if p.IntVal < 0 || p.IntVal > 65535 {
			return 0, 0, fmt.Errorf("port %d out of range 0-65535", p.IntVal)
		}
		return uint16(p.IntVal), uint16(p.IntVal), nil
	}
	return schemas.ParsePortRange(p.StrVal)
}

// PortString is the wire form of a port for a command: "80" or "lo:hi".
func PortString(p intstr.IntOrString) string {
	if p.Type == intstr.Int {
		return strconv.Itoa(int(p.IntVal))
	}
	return p.StrVal
}
