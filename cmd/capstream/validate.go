package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/capstream/capstream/router"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// maxManifestBytes bounds what validate reads from one file or stdin.
const maxManifestBytes = 16 << 20

func newValidateCmd() *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "validate -f FILE [-f FILE...]",
		Short: "Check PacketCapture YAML offline, as the API server and router would",
		Long: `validate reads PacketCapture manifests (several documents per file are fine;
"-" is stdin) and checks them the way the CRD schema and the router do:
selector syntax, protocols, ports and "lo:hi" ranges, RFC 3339 times and
startTime before endTime. It prints one line per capture and exits 1 if any
is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return usageError{Err: errors.New("validate needs at least one -f FILE")}
			}
			bad := 0
			for _, f := range files {
				n, err := validateFile(c.OutOrStdout(), f)
				if err != nil {
					return usageError{Err: err}
				}
				bad += n
			}
			if bad > 0 {
				return fmt.Errorf("%d invalid PacketCapture(s)", bad)
			}
			return nil
		},
	}
	c.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, or - for stdin")
	return c
}

// validateFile prints a line per document and returns how many are invalid.
// The error is for a file that cannot be read at all.
func validateFile(out io.Writer, name string) (int, error) {
	var r io.Reader
	if name == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifestBytes+1))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > maxManifestBytes {
		return 0, fmt.Errorf("read %s: larger than %d bytes", name, maxManifestBytes)
	}
	pcs, errs := DecodePacketCaptures(data)
	bad := 0
	for i, err := range errs {
		if err != nil {
			bad++
			fmt.Fprintf(out, "%s: document %d: invalid: %v\n", name, i+1, err)
			continue
		}
		pc := pcs[i]
		if err := router.ValidatePacketCapture(pc); err != nil {
			bad++
			fmt.Fprintf(out, "%s: %s/%s: invalid: %v\n", name, pc.Namespace, pc.Name, err)
			continue
		}
		fmt.Fprintf(out, "%s: %s/%s: valid\n", name, pc.Namespace, pc.Name)
	}
	return bad, nil
}

// DecodePacketCaptures splits a YAML stream into documents and decodes each
// strictly as a projectcalico.org/v3 PacketCapture. The two slices have one
// entry per non-empty document; errs[i] is set when document i is not one.
func DecodePacketCaptures(data []byte) ([]*v3.PacketCapture, []error) {
	var pcs []*v3.PacketCapture
	var errs []error
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			pcs, errs = append(pcs, nil), append(errs, fmt.Errorf("split yaml: %w", err))
			break
		}
		if len(strings.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		pc, err := decodePacketCapture(doc)
		pcs, errs = append(pcs, pc), append(errs, err)
	}
	return pcs, errs
}

func decodePacketCapture(doc []byte) (*v3.PacketCapture, error) {
	pc := &v3.PacketCapture{}
	if err := yaml.UnmarshalStrict(doc, pc); err != nil {
		return nil, fmt.Errorf("decode yaml: %w", err)
	}
	if want := v3.SchemeGroupVersion.String(); pc.APIVersion != want || pc.Kind != v3.Kind {
		return nil, fmt.Errorf("apiVersion %q kind %q: want %s %s", pc.APIVersion, pc.Kind, want, v3.Kind)
	}
	if pc.Namespace == "" {
		pc.Namespace = "default"
	}
	return pc, nil
}

func stripComments(doc []byte) string {
	var b strings.Builder
	for _, line := range strings.Split(string(doc), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
