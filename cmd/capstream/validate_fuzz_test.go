package main

import (
	"os"
	"testing"

	"github.com/capstream/capstream/router"
)

// FuzzDecodePacketCaptures feeds arbitrary bytes to the manifest decoder and
// the validator: they may reject anything but must never panic.
func FuzzDecodePacketCaptures(f *testing.F) {
	for _, p := range []string{"../../schemas/v3/testdata/sample.yaml", "../../schemas/v3/testdata/full.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("---\n---\napiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: a}\nspec: {filters: [{protocol: 300, ports: ['1:0']}]}\n"))
	f.Add([]byte("\x00\xff: [{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pcs, errs := DecodePacketCaptures(data)
		if len(pcs) != len(errs) {
			t.Fatalf("%d captures but %d errors", len(pcs), len(errs))
		}
		for i, pc := range pcs {
			if (pc == nil) == (errs[i] == nil) {
				t.Fatalf("document %d: capture %v with error %v", i, pc, errs[i])
			}
			if pc != nil {
				_ = router.ValidatePacketCapture(pc)
			}
		}
	})
}
