package sink

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/capstream/capstream/schemas"
)

func testShare() *share {
	return &share{id: "self", interval: time.Second, joined: make(chan struct{}, 1), members: map[string]time.Time{}}
}

func announcement(t testing.TB, id string, held int) *nats.Msg {
	b, err := json.Marshal(schemas.SinkMember{ID: id, Held: held})
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Data: b}
}

func joinedSignalled(s *share) bool {
	select {
	case <-s.joined:
		return true
	default:
		return false
	}
}

// heard remembers a fellow replica and answers a new one; it ignores its
// own announcement, bad bodies and, once it remembers maxMembers, new IDs,
// without answering them: a flood of forged IDs costs neither memory nor a
// flood of announcements.
func TestShareHeard(t *testing.T) {
	s := testShare()
	s.heard(announcement(t, "b", 1))
	if _, ok := s.members["b"]; !ok || !joinedSignalled(s) {
		t.Fatalf("a new replica: members %v, answered %v", s.members, false)
	}
	s.heard(announcement(t, "b", 2))
	if joinedSignalled(s) {
		t.Error("a known replica was answered again")
	}
	for _, m := range []*nats.Msg{
		announcement(t, "self", 0),
		announcement(t, "a.b", 0),
		announcement(t, "c", -1),
		{Data: []byte("{")},
		{Data: []byte(`{"id":"` + strings.Repeat("x", schemas.MaxSinkMemberBytes) + `"}`)},
	} {
		s.heard(m)
	}
	if len(s.members) != 1 || joinedSignalled(s) {
		t.Errorf("bad announcements were taken: members %v", s.members)
	}
	for i := len(s.members); i < maxMembers; i++ {
		s.members[fmt.Sprintf("m%d", i)] = time.Now()
	}
	s.heard(announcement(t, "one-too-many", 0))
	if _, ok := s.members["one-too-many"]; ok || len(s.members) != maxMembers {
		t.Errorf("%d members remembered, want at most %d", len(s.members), maxMembers)
	}
	if joinedSignalled(s) {
		t.Error("an ID beyond maxMembers was answered")
	}
	if got := s.live(time.Now()); len(got) != maxMembers+1 || got[0] > got[1] {
		t.Errorf("live: %d IDs, want %d sorted", len(got), maxMembers+1)
	}
	if got := s.live(time.Now().Add(4 * time.Second)); len(got) != 1 || got[0] != "self" {
		t.Errorf("live after three silent rounds: %v, want only self", got)
	}
}

// FuzzShareHeard: any body on the group subject is taken or ignored,
// never a panic, and what is remembered is a valid member.
func FuzzShareHeard(f *testing.F) {
	for _, seed := range []string{`{"id":"abc","held":2}`, `{"id":"a.b"}`, `{"held":-1}`, `{`, ``, `{"id":"x","held":17}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s := testShare()
		s.heard(&nats.Msg{Data: body})
		for id := range s.members {
			if err := (schemas.SinkMember{ID: id}).Validate(); err != nil {
				t.Fatalf("remembered %q: %v", id, err)
			}
		}
	})
}
