package selector

import "testing"

// benchSelectors are shaped like the selectors Calico users write for
// network policies and that the router sees on captures.
var benchSelectors = []struct {
	name string
	sel  string
}{
	{"eq", `app == "web"`},
	{"namespace_and_app", `projectcalico.org/namespace == "shop" && app in {"web", "api", "worker"}`},
	{"policy", `projectcalico.org/namespace == "shop" && (app == "web" || tier starts with "front") && !has(canary) && env != "dev"`},
	{"negative_miss", `pcns.team not in {"payments", "identity"} && projectcalico.org/serviceaccount != "default" && version ends with "-rc"`},
	{"large_set", `app in {"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10", "a11", "a12", "a13", "a14", "a15", "web"}`},
	{"all", `all()`},
}

// workloadLabels returns the labels Calico puts on a typical workload
// endpoint: the pod's own labels plus the projectcalico.org/* and pcns.*
// (namespace label) ones.
func workloadLabels() map[string]string {
	return map[string]string{
		"app":                              "web",
		"tier":                             "frontend",
		"version":                          "v1.42.0",
		"pod-template-hash":                "7d9f8c6b5",
		"env":                              "prod",
		"projectcalico.org/namespace":      "shop",
		"projectcalico.org/orchestrator":   "k8s",
		"projectcalico.org/serviceaccount": "web-sa",
		"pcns.kubernetes.io/metadata.name": "shop",
		"pcns.team":                        "storefront",
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range benchSelectors {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.sel)))
			for b.Loop() {
				if _, err := Parse(bc.sel); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEvaluate(b *testing.B) {
	labels := workloadLabels()
	for _, bc := range benchSelectors {
		sel := MustParse(bc.sel)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sel.Evaluate(labels)
			}
		})
	}
}
