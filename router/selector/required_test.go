package selector

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestRequirements(t *testing.T) {
	eq := func(k string, vs ...string) Requirement { return Requirement{Key: k, Values: vs} }
	has := func(k string) Requirement { return Requirement{Key: k, AnyValue: true} }
	cases := map[string]struct {
		sel  string
		want []Requirement
	}{
		"empty":                 {``, nil},
		"all":                   {`all()`, nil},
		"global":                {`global()`, nil},
		"eq":                    {`app == "web"`, []Requirement{eq("app", "web")}},
		"in sorted":             {`app in {"b", "a", "b"}`, []Requirement{eq("app", "a", "b")}},
		"in empty":              {`app in {}`, []Requirement{eq("app")}},
		"has":                   {`has(app)`, []Requirement{has("app")}},
		"contains":              {`app contains "w"`, []Requirement{has("app")}},
		"starts with":           {`app starts with ""`, []Requirement{has("app")}},
		"ends with":             {`app ends with "b"`, []Requirement{has("app")}},
		"ne":                    {`app != "web"`, nil},
		"not in":                {`app not in {"web"}`, nil},
		"not has":               {`!has(app)`, nil},
		"not eq":                {`!app == "web"`, nil},
		"not ne":                {`!app != "web"`, []Requirement{eq("app", "web")}},
		"not not in":            {`!(app not in {"a"})`, []Requirement{eq("app", "a")}},
		"not all":               {`!all()`, nil},
		"and sorted by key":     {`tier == "db" && app == "web" && x != "1"`, []Requirement{eq("app", "web"), eq("tier", "db")}},
		"and same key":          {`app in {"a", "b", "c"} && app in {"b", "c", "d"}`, []Requirement{eq("app", "b", "c")}},
		"and contradiction":     {`app == "a" && app == "b"`, []Requirement{eq("app")}},
		"and has then value":    {`has(app) && app == "a"`, []Requirement{eq("app", "a")}},
		"and value then has":    {`app == "a" && has(app)`, []Requirement{eq("app", "a")}},
		"or same key":           {`app == "a" || app in {"c", "b"}`, []Requirement{eq("app", "a", "b", "c")}},
		"or with has":           {`app == "a" || has(app)`, []Requirement{has("app")}},
		"or different keys":     {`app == "a" || tier == "db"`, nil},
		"or one without":        {`app == "a" || all()`, nil},
		"or first without":      {`all() || app == "a"`, nil},
		"or common key":         {`(app == "a" && tier == "db") || (app == "b" && x == "1")`, []Requirement{eq("app", "a", "b")}},
		"and of or":             {`(app == "a" || app == "b") && has(tier)`, []Requirement{eq("app", "a", "b"), has("tier")}},
		"de morgan not or":      {`!(app != "a" || !has(tier))`, []Requirement{eq("app", "a"), has("tier")}},
		"de morgan not and":     {`!(app != "a" && app != "b")`, []Requirement{eq("app", "a", "b")}},
		"calico labels":         {`projectcalico.org/namespace == "shop" && pcns.team == "x"`, []Requirement{eq("pcns.team", "x"), eq("projectcalico.org/namespace", "shop")}},
		"negation inside and":   {`app == "a" && !(tier == "db")`, []Requirement{eq("app", "a")}},
		"bench app and version": {`app == 'app-1' && version == 'v2'`, []Requirement{eq("app", "app-1"), eq("version", "v2")}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := MustParse(tc.sel).Requirements()
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Requirements(%q) (-want +got):\n%s", tc.sel, diff)
			}
		})
	}
	if got := (&Selector{}).Requirements(); len(got) != 0 {
		t.Errorf("zero Selector: %v", got)
	}
}

// TestRequirementsAreNecessary checks, on the evaluation corpus and on
// random selectors and label maps, that every label map a selector matches
// meets all its requirements.
func TestRequirementsAreNecessary(t *testing.T) {
	for name, tc := range evalCases {
		sel := MustParse(tc.sel)
		if tc.want {
			checkNecessary(t, name, sel, tc.labels)
		}
		for _, l := range anyLabels {
			checkNecessary(t, name, sel, l)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		sel := MustParse(randomSelector(rng, 3))
		for range 8 {
			checkNecessary(t, sel.String(), sel, randomLabels(rng))
		}
	}
}

// FuzzRequirements checks the same on any accepted selector, against label
// maps drawn from the keys and values the selector itself names.
func FuzzRequirements(f *testing.F) {
	for _, tc := range evalCases {
		if len(tc.sel) <= 4096 {
			f.Add(tc.sel)
		}
	}
	for _, tc := range benchSelectors {
		f.Add(tc.sel)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err != nil {
			return
		}
		vals := map[string][]string{}
		sel.root.valuesByKey(vals)
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range vals {
				if !yield(k) {
					return
				}
			}
		})
		h := fnv.New64a()
		h.Write([]byte(in))
		rng := rand.New(rand.NewPCG(h.Sum64(), 7))
		for range 64 {
			l := map[string]string{}
			for _, k := range keys {
				if c := rng.IntN(len(vals[k]) + 2); c < len(vals[k]) {
					l[k] = vals[k][c]
				} else if c == len(vals[k]) {
					l[k] = "other"
				}
			}
			checkNecessary(t, in, sel, l)
		}
	})
}

func (n *node) valuesByKey(vals map[string][]string) {
	if n.key != "" {
		vals[n.key] = append(vals[n.key], n.value)
		vals[n.key] = append(vals[n.key], n.set...)
	}
	for i := range n.kids {
		n.kids[i].valuesByKey(vals)
	}
}

func checkNecessary(t *testing.T, name string, sel *Selector, labels map[string]string) {
	t.Helper()
	if !sel.Evaluate(labels) {
		return
	}
	for _, r := range sel.Requirements() {
		v, ok := labels[r.Key]
		if !ok || (!r.AnyValue && !slices.Contains(r.Values, v)) {
			t.Fatalf("%s: %q matches %v but requirement %+v does not hold", name, sel, labels, r)
		}
	}
}

var (
	reqKeys   = []string{"a", "b", "c"}
	reqValues = []string{"x", "y", "xy", ""}
)

// randomSelector draws a selector over a few keys and values, so that
// random label maps often match.
func randomSelector(rng *rand.Rand, depth int) string {
	k := reqKeys[rng.IntN(len(reqKeys))]
	v := func() string { return `"` + reqValues[rng.IntN(len(reqValues))] + `"` }
	set := func() string {
		vs := make([]string, rng.IntN(3))
		for i := range vs {
			vs[i] = v()
		}
		return "{" + strings.Join(vs, ", ") + "}"
	}
	c := rng.IntN(14)
	if depth == 0 {
		c %= 10
	}
	switch c {
	case 0:
		return "all()"
	case 1:
		return fmt.Sprintf("has(%s)", k)
	case 2:
		return fmt.Sprintf("%s == %s", k, v())
	case 3:
		return fmt.Sprintf("%s != %s", k, v())
	case 4:
		return fmt.Sprintf("%s in %s", k, set())
	case 5:
		return fmt.Sprintf("%s not in %s", k, set())
	case 6:
		return fmt.Sprintf("%s contains %s", k, v())
	case 7:
		return fmt.Sprintf("%s starts with %s", k, v())
	case 8:
		return fmt.Sprintf("%s ends with %s", k, v())
	case 9:
		return "global()"
	case 10:
		return "!(" + randomSelector(rng, depth-1) + ")"
	case 11:
		return "(" + randomSelector(rng, depth-1) + ") || (" + randomSelector(rng, depth-1) + ")"
	default:
		return "(" + randomSelector(rng, depth-1) + ") && (" + randomSelector(rng, depth-1) + ")"
	}
}

func randomLabels(rng *rand.Rand) map[string]string {
	l := map[string]string{}
	for _, k := range reqKeys {
		if rng.IntN(3) > 0 {
			l[k] = reqValues[rng.IntN(len(reqValues))]
		}
	}
	return l
}
