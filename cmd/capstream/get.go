package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	v3 "github.com/capstream/capstream/schemas/v3"
)

// packetCaptureNames are the names kubectl resolves for the resource.
var packetCaptureNames = map[string]bool{
	"packetcapture": true, "packetcaptures": true,
	"packetcapture.projectcalico.org": true, "packetcaptures.projectcalico.org": true,
	"packetcapture.p": true, "packetcaptures.p": true,
}

func newGetCmd() *cobra.Command {
	var kube kubeFlags
	var all bool
	var output string
	c := &cobra.Command{
		Use:   "get packetcaptures [NAME] [-n NAMESPACE | -A] [-o table|yaml|json]",
		Short: "Show PacketCaptures and their status at a glance",
		Long: `get lists PacketCaptures with their capture state per node, packet, byte and
drop counts, completed pcap objects and readiness. The resource may be named
as kubectl names it: packetcapture(s), packetcapture(s).projectcalico.org
or packetcapture(s).p.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			if !packetCaptureNames[strings.ToLower(args[0])] {
				return usageError{Err: fmt.Errorf("unknown resource %q: capstream gets packetcaptures", args[0])}
			}
			if output != "table" && output != "yaml" && output != "json" {
				return usageError{Err: fmt.Errorf("-o %q: want table, yaml or json", output)}
			}
			dyn, err := kube.dynamic()
			if err != nil {
				return err
			}
			ns := kube.namespace
			if all {
				ns = ""
			}
			var pcs []v3.PacketCapture
			res := dyn.Resource(v3.Resource).Namespace(ns)
			if len(args) == 2 {
				if err := checkCaptureName(kube.namespace, args[1]); err != nil {
					return err
				}
				u, err := res.Get(c.Context(), args[1], metav1.GetOptions{})
				if err != nil {
					return kubeError(err, fmt.Sprintf("packetcapture %s/%s", kube.namespace, args[1]))
				}
				var pc v3.PacketCapture
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pc); err != nil {
					return err
				}
				pcs = append(pcs, pc)
			} else {
				list, err := res.List(c.Context(), metav1.ListOptions{})
				if err != nil {
					return kubeError(err, "packetcaptures")
				}
				for _, u := range list.Items {
					var pc v3.PacketCapture
					if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pc); err != nil {
						return err
					}
					pcs = append(pcs, pc)
				}
			}
			return printCaptures(c.OutOrStdout(), pcs, output, time.Now())
		},
	}
	kube.add(c.Flags())
	c.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list captures in every namespace")
	c.Flags().StringVarP(&output, "output", "o", "table", "table, yaml or json")
	return c
}

// kubeError classifies an API error for the exit code.
func kubeError(err error, what string) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: %w", what, errNotFound)
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: %w", what, err)
	case apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsServiceUnavailable(err) || isConnError(err):
		return fmt.Errorf("kubernetes API %s: %w: %v", what, errUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isConnError reports a failure to reach the server at all.
func isConnError(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns)
}

func printCaptures(w io.Writer, pcs []v3.PacketCapture, output string, now time.Time) error {
	sort.Slice(pcs, func(i, j int) bool {
		if pcs[i].Namespace != pcs[j].Namespace {
			return pcs[i].Namespace < pcs[j].Namespace
		}
		return pcs[i].Name < pcs[j].Name
	})
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(pcs)
	case "yaml":
		b, err := yaml.Marshal(pcs)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	if len(pcs) == 0 {
		_, err := fmt.Fprintln(w, "No PacketCaptures found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tSTATE\tNODES\tPACKETS\tBYTES\tDROPS\tOBJECTS\tREADY\tAGE")
	for _, pc := range pcs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", pc.Namespace, pc.Name, captureState(pc), len(pc.Status.Files),
			pc.Status.Packets, humanBytes(pc.Status.Bytes), pc.Status.Drops, pc.Status.Objects, readiness(pc),
			humanAge(now.Sub(pc.CreationTimestamp.Time)))
	}
	return tw.Flush()
}

// captureState summarises the per-node states: the most active one wins,
// so a capture running on any node reads Capturing.
func captureState(pc v3.PacketCapture) string {
	rank := map[v3.PacketCaptureState]int{v3.StateError: 5, v3.StateCapturing: 4, v3.StateWaitingForTraffic: 3, v3.StateScheduled: 2, v3.StateFinished: 1}
	best := ""
	bestRank := 0
	for _, f := range pc.Status.Files {
		if f.State != nil && rank[*f.State] > bestRank {
			best, bestRank = string(*f.State), rank[*f.State]
		}
	}
	if best == "" {
		return "-"
	}
	return best
}

func readiness(pc v3.PacketCapture) string {
	for _, c := range pc.Status.Conditions {
		if c.Type == v3.ConditionError && c.Status == metav1.ConditionTrue {
			return "Error: " + truncate(c.Message, 60)
		}
	}
	for _, c := range pc.Status.Conditions {
		if c.Type == v3.ConditionReady {
			return string(c.Status)
		}
	}
	return "Unknown"
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
