package main

// captured-packets copy and clean: their flags and arguments. They go
// through the access API (access_client.go) or, with --direct, S3
// (captured_direct.go); both download through copyObjects (download.go).

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/capstream/capstream/internal/pcapobjects"
)

func newCapturedPacketsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "captured-packets",
		Short: "Download or delete a capture's pcap objects",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usageError{Err: errors.New("captured-packets needs a subcommand: copy or clean")}
		},
	}
	c.AddCommand(newCopyCmd(), newCleanCmd())
	return c
}

// objectFlags are the flags copy and clean share: the access API or, with
// --direct, S3; the kubeconfig; and --uid.
type objectFlags struct {
	s3   s3Flags
	kube kubeFlags
	api  apiFlags
	uid  string
}

func (f *objectFlags) add(fs *pflag.FlagSet, uidUsage string) {
	f.s3.add(fs)
	f.kube.add(fs)
	f.api.add(fs)
	fs.StringVar(&f.uid, "uid", "", uidUsage)
}

// checkUID rejects a --uid that cannot be a capture UID.
func (f *objectFlags) checkUID() error {
	if f.uid != "" && !pcapobjects.ValidUID(f.uid) {
		return usageError{Err: fmt.Errorf("invalid --uid %q: want 1 to %d letters, digits or '-'", f.uid, pcapobjects.MaxUIDLength)}
	}
	return nil
}

// apiClient is the access API's client, unless --direct (nil then).
func (f *objectFlags) apiClient() (*apiClient, error) {
	if f.api.direct {
		return nil, nil
	}
	return f.api.client(&f.kube)
}

// copyRequest is what copy was asked for.
type copyRequest struct {
	namespace, name, uid, node string
	since, until               time.Time
	dir                        string
	merge, quiet               bool
}

func parseTimeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, usageError{Err: fmt.Errorf("--%s %q: want an RFC 3339 time or a duration ago such as 15m", name, v)}
	}
	return t, nil
}

func newCopyCmd() *cobra.Command {
	var f objectFlags
	var node, sinceS, untilS, dir string
	var merge, quiet bool
	c := &cobra.Command{
		Use:   "copy NAME [-n NAMESPACE] [--uid UID] [--node N] [--since T] [--until T] [--merge] -d DIR",
		Short: "Download a capture's pcaps from S3",
		Long: `copy downloads the completed pcap objects of a capture into DIR, keeping the
<node>/<pod>_<iface>/ layout of the object store. With --merge it writes
one time-ordered pcap, DIR/<namespace>_<name>.pcap, instead, and checks
that it can write that file before downloading anything. --since and
--until take RFC 3339 times or durations ago (15m) and keep the objects
whose packets overlap that window. Checksums recorded by the sink are
verified. Progress goes to stderr.

Objects are kept per capture UID, so a capture deleted and re-created
under the same name does not take its predecessor's objects along. Without
--uid, copy takes the live PacketCapture's UID (through the kubeconfig);
when there is none to ask, the only UID with objects under the name; with
several, it lists them and asks for --uid.

copy goes through the access API (--server or $CAPSTREAM_ACCESS_URL, its
CA from --certificate-authority or $CAPSTREAM_ACCESS_CA) as the
kubeconfig's user, who needs get on packetcaptures/files in the
namespace. --direct reads S3 with its credentials instead (admin mode).`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name, namespace := args[0], f.kube.namespace
			if err := checkCaptureName(namespace, name); err != nil {
				return err
			}
			if dir == "" {
				return usageError{Err: errors.New("copy needs -d DIR")}
			}
			since, err := parseTimeFlag("since", sinceS)
			if err != nil {
				return err
			}
			until, err := parseTimeFlag("until", untilS)
			if err != nil {
				return err
			}
			if err := f.checkUID(); err != nil {
				return err
			}
			r := copyRequest{namespace: namespace, name: name, uid: f.uid,
				node: node, since: since, until: until, dir: dir, merge: merge, quiet: quiet}
			api, err := f.apiClient()
			if err != nil {
				return err
			}
			if api != nil {
				return copyViaAPI(c.Context(), c.OutOrStdout(), c.ErrOrStderr(), api, r)
			}
			return copyDirect(c.Context(), c.OutOrStdout(), c.ErrOrStderr(), &f, r)
		},
	}
	f.add(c.Flags(), "the capture UID whose objects to take (default: the live capture's, else the only one with objects)")
	c.Flags().StringVar(&node, "node", "", "only this node's objects")
	c.Flags().StringVar(&sinceS, "since", "", "only objects with packets at or after this time (RFC 3339 or duration ago)")
	c.Flags().StringVar(&untilS, "until", "", "only objects with packets at or before this time")
	c.Flags().BoolVar(&merge, "merge", false, "write one time-ordered pcap instead of the objects")
	c.Flags().StringVarP(&dir, "dir", "d", "", "directory to download into")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	return c
}

func newCleanCmd() *cobra.Command {
	var f objectFlags
	c := &cobra.Command{
		Use:   "clean NAME [-n NAMESPACE] [--uid UID]",
		Short: "Delete a capture's pcaps from S3",
		Long: `clean deletes the pcap objects of one capture UID: the live PacketCapture's
(through the kubeconfig), or with none to ask the only UID with objects
under the name, or --uid. Objects of other captures that had the same name
stay; with several UIDs and no live capture, clean lists them and asks for
--uid.

clean goes through the access API as the kubeconfig's user, who needs
delete on packetcaptures/files in the namespace; --direct deletes in S3
with its credentials (admin mode).`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name, namespace := args[0], f.kube.namespace
			if err := checkCaptureName(namespace, name); err != nil {
				return err
			}
			if err := f.checkUID(); err != nil {
				return err
			}
			api, err := f.apiClient()
			if err != nil {
				return err
			}
			if api != nil {
				return cleanViaAPI(c.Context(), c.OutOrStdout(), api, namespace, name, f.uid)
			}
			return cleanDirect(c.Context(), c.OutOrStdout(), c.ErrOrStderr(), &f, namespace, name)
		},
	}
	f.add(c.Flags(), "the capture UID whose objects to delete (default: the live capture's, else the only one with objects)")
	return c
}
