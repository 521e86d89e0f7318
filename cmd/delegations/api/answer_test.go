package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/delegations/delegations/fsm"
	"github.com/delegations/delegations/projection"
	"github.com/delegations/delegations/projection/artifact"
)

// TestAnswersAppendJSON: the answers that marshal writes itself (lists,
// records, reads) are what encoding/json writes for them.
func TestAnswersAppendJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	ds := []fsm.Delegation{
		{ID: "calm-green-otter", State: fsm.Complete, Title: "a <b> & c", Description: "d\n\"e\"", CreatedAt: at, Version: 3, ArtifactPath: "p/q.md"},
		{ID: "bold-blue-tiger", State: fsm.Running, Registration: fsm.Registration{
			Prompt: "\u2028\xff", Timeout: time.Minute,
		}, StartedAt: at},
	}
	for _, v := range []any{
		List{Delegations: ds, Text: "## Delegations <x> & \"y\"\n", Next: "bold-blue-tiger"},
		List{Delegations: []fsm.Delegation{}, Text: "none"},
		List{},
		Delegations{Delegations: ds},
		Delegations{},
		ds[0], ds[1], fsm.Delegation{},
		projection.ReadResult{Text: "# <Result> & \"more\"\n\u2029\xff\x01", Artifact: true, Delegation: ds[0]},
		projection.ReadResult{},
	} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		got, err := marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%T:\n got %s\nwant %s", v, got, want.Bytes())
		}
	}
}

// TestListPages: limit and after page list; next is set while delegations
// remain, and each page's text is that page's; a negative limit is refused.
func TestListPages(t *testing.T) {
	s, err := projection.Open(t.TempDir(), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	svc := NewService(s)
	ctx := context.Background()
	for range 5 {
		if _, err := svc.Register(ctx, RegisterRequest{RootSessionID: "ses_root", ParentSessionID: "ses_root", Agent: "a", ProjectID: "proj", Prompt: "a prompt"}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := svc.List(ctx, ListRequest{RootSessionID: "ses_root"})
	if err != nil || len(all.Delegations) != 5 || all.Next != "" {
		t.Fatalf("list: %+v %v", all, err)
	}
	if all.Delegations[0].Prompt != "" {
		t.Errorf("list returned a prompt: %+v", all.Delegations[0])
	}
	var got []fsm.Delegation
	req := ListRequest{RootSessionID: "ses_root", Limit: 2}
	for pages := 1; ; pages++ {
		l, err := svc.List(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if l.Text != artifact.ListText(l.Delegations) {
			t.Errorf("page %d: text of another page: %q", pages, l.Text)
		}
		got = append(got, l.Delegations...)
		if l.Next == "" {
			if pages != 3 {
				t.Errorf("%d pages, want 3", pages)
			}
			break
		}
		req.After = l.Next
	}
	if !reflect.DeepEqual(got, all.Delegations) {
		t.Errorf("pages put together:\n got %+v\nwant %+v", got, all.Delegations)
	}
	if l, err := svc.List(ctx, ListRequest{RootSessionID: "ses_root", TextOnly: true}); err != nil || l.Text != all.Text || len(l.Delegations) != 0 || l.Delegations == nil {
		t.Errorf("textOnly: %+v %v", l, err)
	}
	if _, err := svc.List(ctx, ListRequest{RootSessionID: "ses_root", Limit: -1}); !errors.Is(err, fsm.ErrInvalid) {
		t.Errorf("negative limit: %v", err)
	}
}
