package clients_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptrace"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/internal/testenv"
)

// The S3 client keeps its TLS connections to the dev S3 server (deps.sh
// starts versitygw with --keep-alive): one handshake for a run of PUTs,
// not one per object, which at 1000 interfaces was most of the pcap
// sink's CPU.
func TestS3ConnectionsReused(t *testing.T) {
	b := testenv.S3(t)
	cl, err := b.Config().Client()
	if err != nil {
		t.Fatal(err)
	}
	const puts = 10
	reused := 0
	trace := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		},
	})
	body := bytes.Repeat([]byte("pcap"), 64<<10)
	for i := range puts {
		if _, err := cl.PutObject(trace, b.Bucket, fmt.Sprintf("reuse/%d", i), bytes.NewReader(body), int64(len(body)),
			minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
			t.Fatal(err)
		}
	}
	if reused < puts-1 {
		t.Errorf("%d of %d PUTs reused a connection, want %d: the server closes every connection (versitygw without --keep-alive?)", reused, puts, puts-1)
	}
}
